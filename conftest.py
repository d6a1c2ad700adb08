"""Pytest setup shared by the tests and the doctests of the package."""

# TorchRL's logger binds to the sys.stdout of its first import; importing it here, before any
# doctest captures stdout, keeps its INFO lines out of the doctests' expected output.
import torchrl  # noqa: F401
