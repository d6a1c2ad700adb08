"""torchrl_bamdp: a modular, TorchRL-native toolkit for Bayes-adaptive deep RL."""

__version__ = "0.1.0"
