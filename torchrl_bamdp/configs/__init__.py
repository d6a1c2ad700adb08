"""Hydra configuration files and their validated schema."""

from torchrl_bamdp.configs.schema import (
    Config,
    ConfigError,
    config_to_dict,
    dotted_leaves,
    load_config,
)

__all__ = ["Config", "ConfigError", "config_to_dict", "dotted_leaves", "load_config"]
