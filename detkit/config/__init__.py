"""Configs: yacs nodes with ``_BASE_`` inheritance and strict, explained merges."""

from detkit.config.config import CfgNode, ConfigError, get_cfg, register_config_extension

__all__ = ["CfgNode", "ConfigError", "get_cfg", "register_config_extension"]
