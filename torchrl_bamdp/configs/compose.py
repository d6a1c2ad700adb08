"""The one source of default values: Hydra's composition of the YAML files in this folder.

``bamdp-train`` composes ``config.yaml`` with its command line; :func:`load_config` in Python
composes the very same files for the algorithm and task family its mapping names, then lays the
mapping on top. So ``load_config({"algo": {"name": "rl2"}, "env": {"name": "cheetah_vel"}})``
and ``bamdp-train algo=rl2 env=cheetah_vel`` are the same configuration, tuning and
``varibad_original``'s per-family files included (``tests/configs/test_one_source.py`` checks
every algorithm x task family). The dataclass defaults in :mod:`~torchrl_bamdp.configs.schema`
are the schema's types and the values of the default composition (varibad on GridNavi; also
tested), never a second set of defaults.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).parent)

#: The option of the ``env`` group a task family without its own YAML file composes: a family
#: of your own (``env.factory``, or registered by name) starts from the generic defaults.
CUSTOM_ENV_OPTION = "custom"
#: The option of the ``algo`` group an algorithm without its own YAML file composes.
GENERIC_ALGO_OPTION = "varibad"


def config_group_options(group: str) -> list[str]:
    """The selectable options of a config group (``env``, ``algo``, ``logger``, ``tuning``).

    Files whose name starts with ``_`` are partials shared by the others (``algo/_ppo.yaml``):
    they are not options.

    Examples
    --------
    >>> config_group_options("logger")
    ['csv', 'wandb']
    >>> "_ppo" in config_group_options("algo")
    False
    """
    folder = Path(CONFIG_DIR) / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def compose_dict(overrides: list[str] | None = None) -> dict[str, Any]:
    """Hydra's composition of the packaged configs with ``overrides``, as a plain dict.

    Examples
    --------
    >>> compose_dict(["algo=rl2"])["algo"]["encoder"]["action_embed"]
    8
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    # Inside a running Hydra app (bamdp-train's own, or a user's) Hydra is initialised with
    # that app's search path: set it aside, compose from this folder, and put it back.
    global_hydra = GlobalHydra.instance()
    running = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            cfg = compose(config_name="config", overrides=list(overrides or []))
        data = OmegaConf.to_container(cfg, resolve=True)
    finally:
        if running is not None:
            GlobalHydra.instance().initialize(running)
    data.pop("hydra", None)
    return data


@functools.cache
def _composed_defaults(algo: str, env: str) -> dict[str, Any]:
    return compose_dict([f"algo={algo}", f"env={env}"])


def group_choices(data: Mapping[str, Any]) -> tuple[str, str]:
    """The ``(algo, env)`` group options whose composition a config mapping starts from.

    The options named by ``algo.name`` and ``env.name``; a name without a YAML file of its own
    (a family of your own, a registered algorithm, or a typo the schema then reports) starts
    from the generic ones (``custom``, ``varibad``).

    Examples
    --------
    >>> group_choices({"algo": {"name": "rl2"}, "env": {"name": "cheetah_vel"}})
    ('rl2', 'cheetah_vel')
    >>> group_choices({"env": {"name": "my_grid", "factory": "my_pkg.tasks:make_env"}})
    ('varibad', 'custom')
    """

    def name_of(section: str, default: str) -> str:
        value = data.get(section)
        if not isinstance(value, Mapping):
            return default
        name = value.get("name", default)
        return name if isinstance(name, str) else default

    algo = name_of("algo", GENERIC_ALGO_OPTION)
    env = name_of("env", "gridworld")
    if algo not in config_group_options("algo"):
        algo = GENERIC_ALGO_OPTION
    env_section = data.get("env")
    own_factory = isinstance(env_section, Mapping) and env_section.get("factory") is not None
    if own_factory or env not in config_group_options("env"):
        env = CUSTOM_ENV_OPTION
    return algo, env


def composed_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """The composition (a fresh copy) that ``load_config(data)`` lays ``data`` onto.

    Examples
    --------
    >>> composed_defaults({"algo": {"name": "rl2"}})["algo"]["ppo"]["encoder_grad"]
    True
    """
    return copy.deepcopy(_composed_defaults(*group_choices(data)))


def merge_onto(base: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` laid onto ``base``: mappings merge key by key, anything else replaces.

    Examples
    --------
    >>> merge_onto({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2, 3]})
    {'a': {'b': 1, 'c': 3}, 'd': [2, 3]}
    """
    out = dict(base)
    for key, value in data.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_onto(out[key], value)
        else:
            out[key] = value
    return out
