"""The package's layering: every subpackage imports on its own, and imports only those below it.

Allowed dependencies (a row may import the parts it lists, and itself; nothing else)::

    part                may import
    ------------------  --------------------------------------------------------------------
    task_distributions  - (the standard library only; every part below may import it)
    registry            task_distributions (the standard library otherwise: configs validate
                        without loading torch)
    algorithms          registry (the standard library otherwise, like registry)
    utils               -
    host_sync           - (torch only: a debugging mode any layer's tests use)
    configs             utils, registry, algorithms
    envs                utils, registry
    modules             utils, envs
    transforms          utils, envs, modules
    objectives          utils, envs, modules
    data                utils, envs
    policies            utils, envs, modules, transforms
    evaluation          utils, configs, envs, modules, transforms, policies
    trainers            utils, registry, algorithms, configs, envs, modules, transforms,
                        objectives, data, policies, evaluation
    cli                 everything but demo
    demo                everything but cli

So ``envs`` imports nothing above it, ``evaluation`` never imports ``trainers`` or ``cli`` (it
takes an agent, env or policy; opening a run directory is ``trainers/runs.py``), ``trainers``
never imports ``cli``, and the table has no cycle. The static check reads every module with
``ast`` and counts module-level *and* function-level imports (an import hidden in a function
still makes a cycle); docstring examples are not imports.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torchrl_bamdp"

ALLOWED: dict[str, set[str]] = {
    "registry": set(),
    "algorithms": {"registry"},
    "utils": set(),
    "host_sync": set(),
    "configs": {"utils", "registry", "algorithms"},
    "envs": {"utils", "registry"},
    "modules": {"utils", "envs"},
    "transforms": {"utils", "envs", "modules"},
    "objectives": {"utils", "envs", "modules"},
    "data": {"utils", "envs"},
    "policies": {"utils", "envs", "modules", "transforms"},
    "evaluation": {"utils", "configs", "envs", "modules", "transforms", "policies"},
    "trainers": {
        "utils",
        "registry",
        "algorithms",
        "configs",
        "envs",
        "modules",
        "transforms",
        "objectives",
        "data",
        "policies",
        "evaluation",
    },
}
# The named task distributions (plain data and cell sets) are read by every layer above them.
for _deps in ALLOWED.values():
    _deps.add("task_distributions")
ALLOWED["task_distributions"] = set()
_BELOW_ENTRY_POINTS = set(ALLOWED)
ALLOWED["cli"] = _BELOW_ENTRY_POINTS
ALLOWED["demo"] = _BELOW_ENTRY_POINTS
ALLOWED["__init__"] = set()  # the package's own __init__: imports no part (cheap `import`)

SUBPACKAGES = [
    "envs",
    "transforms",
    "modules",
    "objectives",
    "data",
    "policies",
    "evaluation",
    "trainers",
    "configs",
]


def _part(module: str) -> str | None:
    """The part of ``torchrl_bamdp`` a dotted module name belongs to (``None``: outside it)."""
    names = module.split(".")
    if names[0] != "torchrl_bamdp":
        return None
    return names[1] if len(names) > 1 else "__init__"


def _imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path`` (a module below ``root``), at any depth:
    module level, function bodies, ``if TYPE_CHECKING:`` blocks."""
    names = list(path.relative_to(root).with_suffix("").parts)
    package = names[:-1]  # a module's package; an __init__'s is its own folder, also names[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def _edges() -> list[tuple[str, str, str]]:
    """``(source part, imported part, "file:line module")`` for every cross-part import."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        source = rel.with_suffix("").parts[0]
        for line, target in _imports(path):
            part = _part(target)
            if part is not None and part != source:
                edges.append((source, part, f"torchrl_bamdp/{rel}:{line} imports {target}"))
    return edges


# One interpreter loads the third-party stack (torch, tensordict, TorchRL: the slow part of an
# import, ~5 s) once, then forks a child per subpackage; each child starts with no
# ``torchrl_bamdp`` module loaded, so an import that only works after another part was loaded
# first still fails there, as it would in a fresh interpreter.
_FORK_IMPORTS = """
import importlib, json, os, sys, traceback
for module in sys.argv[1].split(","):
    importlib.import_module(module)
assert not [m for m in sys.modules if m.startswith("torchrl_bamdp")]
results = {}
for name in sys.argv[2:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__("torchrl_bamdp." + name)
            message = ""
        except BaseException:
            message = traceback.format_exc() or "failed"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    results[name] = message or ("" if status == 0 else f"child exited with status {status}")
print(json.dumps(results))
"""

THIRD_PARTY = "torch,tensordict,torchrl,torchrl.envs,torchrl.objectives,torchrl.collectors"


@pytest.fixture(scope="module")
def import_errors() -> dict[str, str]:
    """``{subpackage: traceback}`` of importing each subpackage on its own ("" = it imported)."""
    result = subprocess.run(
        [sys.executable, "-c", _FORK_IMPORTS, THIRD_PARTY, *SUBPACKAGES],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports_on_its_own(name, import_errors):
    """No import-order luck from other parts of the package loaded first."""
    assert import_errors[name] == "", import_errors[name]


def test_the_import_check_sees_a_broken_subpackage(tmp_path):
    """The forked import reports a failing import (here: a package whose import raises)."""
    (tmp_path / "torchrl_bamdp").mkdir()
    (tmp_path / "torchrl_bamdp" / "__init__.py").write_text("")
    (tmp_path / "torchrl_bamdp" / "broken.py").write_text("import torchrl_bamdp.missing\n")
    (tmp_path / "torchrl_bamdp" / "fine.py").write_text("X = 1\n")
    result = subprocess.run(
        [sys.executable, "-c", _FORK_IMPORTS, "json", "broken", "fine"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert "ModuleNotFoundError" in errors["broken"] and errors["fine"] == ""


def test_every_part_is_in_the_dependency_table():
    parts = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    parts |= {p.stem for p in PACKAGE.glob("*.py")}
    missing = sorted(parts - set(ALLOWED))
    assert not missing, f"add {missing} to ALLOWED in tests/test_layering.py (and its docstring)"


def test_imports_follow_the_dependency_table():
    bad = [
        f"{where} ({source} may import only {sorted(ALLOWED[source]) or 'nothing'})"
        for source, part, where in _edges()
        if part not in ALLOWED.get(source, set())
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_static_check_sees_hidden_and_relative_imports(tmp_path):
    """An import in a function body, or a relative one, counts like a module-level one."""
    module = tmp_path / "torchrl_bamdp" / "evaluation" / "hidden.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "def f():\n    from torchrl_bamdp.trainers import Trainer\n    return Trainer\n\n\n"
        "def g():\n    from ..cli import eval_main\n    return eval_main\n"
    )
    found = _imports(module, root=tmp_path)
    assert found == [(2, "torchrl_bamdp.trainers"), (7, "torchrl_bamdp.cli")]


def test_the_dependency_table_has_no_cycle():
    """A layering: some order lists every part after all it may import."""
    order: list[str] = []
    remaining = dict(ALLOWED)
    while remaining:
        ready = [p for p, deps in remaining.items() if deps <= set(order)]
        assert ready, f"cycle among {sorted(remaining)}"
        order += sorted(ready)
        for p in ready:
            del remaining[p]


def test_registry_and_configs_load_without_torch():
    """Config validation (and so a typo's error message) needs neither torch nor TorchRL."""
    code = (
        "import sys, torchrl_bamdp.registry, torchrl_bamdp.algorithms, torchrl_bamdp.configs;"
        "torchrl_bamdp.configs.load_config({'env': {'name': 'cheetah_vel'}});"
        "print(sorted(m for m in ('torch', 'torchrl', 'tensordict') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
