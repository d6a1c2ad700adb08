"""Fixtures shared by the test modules."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def load_script() -> Iterator[Callable[[Path], ModuleType]]:
    """Import a script that is not in a package (``benchmarks/*.py``) by its path.

    The module is registered in ``sys.modules`` while the test module runs (dataclasses and
    pickling look it up there) and removed afterwards.
    """
    loaded: list[str] = []

    def load(path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        loaded.append(spec.name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
