"""Small utilities shared across detkit."""
