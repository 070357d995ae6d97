"""Plugins: each subpackage registers components into detkit's registries on import.

A config names a plugin in ``IMPORTS`` (e.g. ``IMPORTS: ["projects.light_head"]``) and
``tools/train_net.py`` imports it before building anything; see ``projects/README.md``.
Nothing under ``detkit/`` imports from here (``tests/test_layering.py`` checks it).
"""

__all__: list[str] = []
