"""Every shipped algorithm x task family as ``bamdp-train`` resolves it, kept in a golden file.

``resolved_configs.json`` holds, per ``<algo>/<env>`` pair, the validated configuration (or the
ConfigError a pair is refused with). ``test_one_source.py`` checks that today's composition is
still exactly that: moving a default between files (e.g. from the algorithm files to
``tuning/gridworld.yaml``) must not change what any shipped pair trains with. A deliberate
change of defaults rewrites the file (and its diff shows what changed)::

    .venv/bin/python tests/configs/resolved_configs.py
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

GOLDEN = Path(__file__).with_name("resolved_configs.json")


def shipped_pairs() -> list[tuple[str, str]]:
    from torchrl_bamdp.configs.compose import CUSTOM_ENV_OPTION, config_group_options

    envs = [e for e in config_group_options("env") if e != CUSTOM_ENV_OPTION]
    return [(a, e) for a in config_group_options("algo") for e in envs]


def resolve(algo: str, env: str) -> dict | str:
    """The pair as ``bamdp-train algo=<algo> env=<env>`` resolves it (a fresh copy each call)."""
    return copy.deepcopy(_resolve(algo, env))


@functools.cache
def _resolve(algo: str, env: str) -> dict | str:
    from torchrl_bamdp.cli import compose_config
    from torchrl_bamdp.configs import ConfigError, config_to_dict

    try:
        return config_to_dict(compose_config([f"algo={algo}", f"env={env}"]))
    except ConfigError as err:
        return f"ConfigError: {err}"


def resolved_configs() -> dict[str, dict | str]:
    return {f"{a}/{e}": resolve(a, e) for a, e in shipped_pairs()}


def write(path: Path = GOLDEN) -> None:
    lines = [
        f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in resolved_configs().items()
    ]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    write()
    print(f"wrote {GOLDEN}")
