"""constraints.txt pins every package the project installs, and the venv holds those versions."""

from __future__ import annotations

import importlib.metadata as metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def installed_closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Installed distributions that ``root[extras]`` requires, directly or not."""
    seen: dict[str, str] = {}
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        if key in seen and not wanted:
            continue
        seen[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if canonicalize_name(req.name) not in seen:
                todo.append((req.name, tuple(req.extras)))
    return seen


def test_constraints_pin_every_installed_dependency():
    pins = locked_versions()
    closure = installed_closure("torchrl_bamdp", ("dev", "distributed"))
    closure.pop("torchrl-bamdp")
    missing = sorted(set(closure) - set(pins))
    assert not missing, f"installed but not locked (run `bash ci/lock.sh`): {missing}"
    # The venv that runs this suite was installed with `pip install -c constraints.txt`.
    wrong = {
        name: (version, pins[name])
        for name, version in closure.items()
        if Version(version).public != Version(pins[name]).public
    }
    assert not wrong, f"installed vs locked versions differ: {wrong}"


def test_setup_installs_with_the_constraints():
    setup = (ROOT / "ci" / "setup.sh").read_text()
    installs = [line for line in setup.splitlines() if "pip install" in line and '"$VPY"' in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    # a change of the lock reinstalls
    assert "pyproject.toml constraints.txt" in setup
