"""The open registry of algorithms: the shipped ones and yours, through the same call.

An algorithm is a name and a *builder* that makes its
:class:`~torchrl_bamdp.trainers.Agent` for a run::

    builder(config: Config, env: BAMDPEnv) -> Agent

``env`` is the run's untransformed BAMDP env (sizes come from its specs) and ``config`` the
validated run configuration (PPO settings, network sizes, ``seed``). Once registered, an
algorithm is an ``algo.name`` like any other: ``load_config`` accepts it and
:func:`~torchrl_bamdp.trainers.build_agent` (hence the :class:`~torchrl_bamdp.trainers.Trainer`,
checkpoints, resume, meta-test and figures) builds it by name. A config can also name a builder
by import path, ``algo.builder="my_pkg.agents:make_agent"`` (``algo.name`` is then its label),
which needs no registration and survives in the run's ``config.json``, so ``bamdp-train``,
a resume, ``bamdp-eval`` and ``bamdp-plot`` in another process find it.

Like :mod:`torchrl_bamdp.registry` (the task families) this module imports nothing but the
standard library: the shipped builders are registered by import path and loaded only when an
agent is built, so configs validate without loading torch.

Examples
--------
>>> "varibad" in algorithm_names() and "rl2" in algorithm_names()
True
>>> get_algorithm("oracle").builder_path
'torchrl_bamdp.trainers.agents:build_oracle'
>>> _ = register_algorithm("doc_oracle", "torchrl_bamdp.trainers.agents:build_oracle")
>>> get_algorithm("doc_oracle").load().__name__
'build_oracle'
>>> unregister_algorithm("doc_oracle")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torchrl_bamdp.registry import FACTORY_PATH, load_factory

#: What an algorithm name (and the label of an ``algo.builder``) may be: it names run
#: directories (``runs/<env>-<algo>-seed<seed>-<time>``) and the rows of result tables.
ALGORITHM_NAME = re.compile(r"[A-Za-z][\w-]*")


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: its name and the builder of its agent.

    Parameters
    ----------
    name : str
        The ``algo.name`` it is selected by.
    builder : callable or str
        ``builder(config, env) -> Agent``, or its import path ``"package.module:function"``
        (loaded on first use).
    description : str
        One line for listings.

    Examples
    --------
    >>> algorithm = Algorithm("oracle", "torchrl_bamdp.trainers.agents:build_oracle")
    >>> algorithm.load().__name__
    'build_oracle'
    """

    name: str
    builder: Callable[..., Any] | str
    description: str = ""

    @property
    def builder_path(self) -> str | None:
        """The import path of the builder, if it was given as one."""
        return self.builder if isinstance(self.builder, str) else None

    def load(self) -> Callable[..., Any]:
        """The builder callable (imported from its path on first use)."""
        if callable(self.builder):
            return self.builder
        return load_factory(self.builder, what=f"builder of algorithm {self.name!r}")


_ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(
    name: str,
    builder: Callable[..., Any] | str,
    description: str = "",
    replace: bool = False,
) -> Algorithm:
    """Register an algorithm under ``name`` (the call the shipped algorithms use too).

    Parameters
    ----------
    name : str
        The ``algo.name`` that selects it: a word of letters, digits, ``_`` or ``-``.
    builder : callable or str
        ``builder(config, env) -> Agent`` or its import path ``"package.module:function"``.
    description : str
        One line for listings.
    replace : bool
        Allow replacing an algorithm of your own registered under the same name (otherwise that
        is an error). A shipped algorithm is never replaced: its name stands for its results
        (DESIGN.md §7), so yours needs a name of its own.

    Returns
    -------
    Algorithm
        The registered entry.

    Raises
    ------
    ValueError
        For a malformed name or builder, or a name that is registered already.

    Examples
    --------
    >>> def make_agent(config, env):
    ...     from torchrl_bamdp.trainers.agents import build_oracle
    ...     return build_oracle(config, env)
    >>> register_algorithm("doc_agent", make_agent).name
    'doc_agent'
    >>> try:
    ...     register_algorithm("doc_agent", make_agent)
    ... except ValueError as err:
    ...     print(str(err).split(";")[0])
    algorithm 'doc_agent' is registered already
    >>> unregister_algorithm("doc_agent")
    """
    if not isinstance(name, str) or not ALGORITHM_NAME.fullmatch(name):
        raise ValueError(
            f"algorithm name must be a word of letters, digits, '_' or '-' starting with a "
            f"letter (got {name!r})"
        )
    if isinstance(builder, str):
        if not FACTORY_PATH.fullmatch(builder):
            raise ValueError(
                f"builder of algorithm {name!r} must be a callable or an import path "
                f"'package.module:function' (got {builder!r})"
            )
    elif not callable(builder):
        raise ValueError(f"builder of algorithm {name!r} must be callable (got {builder!r})")
    if name in _ALGORITHMS:
        if name in SHIPPED_ALGORITHMS:
            raise ValueError(
                f"algorithm {name!r} is registered already; it is shipped with torchrl_bamdp "
                "and cannot be replaced: register yours under a name of its own"
            )
        if not replace:
            raise ValueError(f"algorithm {name!r} is registered already; pass replace=True")
    algorithm = Algorithm(name, builder, description)
    _ALGORITHMS[name] = algorithm
    return algorithm


def unregister_algorithm(name: str) -> None:
    """Remove an algorithm of your own (e.g. a test's); a shipped one stays.

    Examples
    --------
    >>> unregister_algorithm("varibad")
    >>> "varibad" in algorithm_names()
    True
    """
    if name not in SHIPPED_ALGORITHMS:
        _ALGORITHMS.pop(name, None)


def algorithm_names() -> tuple[str, ...]:
    """Names of the registered algorithms, in registration order (the shipped ones first).

    Examples
    --------
    >>> algorithm_names()[:2]
    ('varibad', 'varibad_original')
    """
    return tuple(_ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name``; ``ValueError`` naming the registered ones otherwise.

    Examples
    --------
    >>> try:
    ...     get_algorithm("varibab")
    ... except ValueError as err:
    ...     print(str(err).split(" (registered")[0])
    algo.name='varibab' is not a registered algorithm
    """
    if name not in _ALGORITHMS:
        raise ValueError(
            f"algo.name={name!r} is not a registered algorithm (registered: "
            f"{list(_ALGORITHMS)}); register yours with "
            "torchrl_bamdp.algorithms.register_algorithm(name, builder), or name its builder "
            "with algo.builder='package.module:function'"
        )
    return _ALGORITHMS[name]


def resolve_builder(name: str, builder: str | None = None) -> Callable[..., Any]:
    """The builder a config's ``algo`` section selects: ``algo.builder`` if set, else the
    registered ``algo.name``.

    Parameters
    ----------
    name : str
        ``algo.name``.
    builder : str, optional
        ``algo.builder``, an import path ``"package.module:function"``.

    Raises
    ------
    ValueError
        Naming ``algo.builder`` when the path is malformed or does not import, or ``algo.name``
        when it is not registered.

    Examples
    --------
    >>> resolve_builder("rl2").__name__
    'build_rl2'
    >>> resolve_builder("mine", "torchrl_bamdp.trainers.agents:build_oracle").__name__
    'build_oracle'
    >>> try:
    ...     resolve_builder("mine", "no_such_package.agents:make_agent")
    ... except ValueError as err:
    ...     print(str(err).split(";")[0])
    algo.builder='no_such_package.agents:make_agent': cannot import module 'no_such_package.agents'
    """
    if builder is not None:
        return load_factory(builder, what="algo.builder")
    return get_algorithm(name).load()


# -- the shipped algorithms, registered the way a user registers theirs -------------------------
_AGENTS = "torchrl_bamdp.trainers.agents"
_SHIPPED = (
    ("varibad", f"{_AGENTS}:build_varibad", "VariBAD: learned belief (ELBO), PPO on it"),
    (
        "varibad_original",
        f"{_AGENTS}:build_varibad",
        "VariBAD as the official implementation configures it",
    ),
    (
        "varibad_switching",
        f"{_AGENTS}:build_varibad",
        "VariBAD for unannounced task switches: never reset, switching-prior ELBO",
    ),
    ("rl2", f"{_AGENTS}:build_rl2", "RL2: a GRU memory trained end to end by PPO"),
    ("rl2_original", f"{_AGENTS}:build_rl2", "RL2 as the official implementation configures it"),
    ("oracle", f"{_AGENTS}:build_oracle", "PPO on the true task (the upper reference)"),
    (
        "belief_oracle",
        f"{_AGENTS}:build_belief_oracle",
        "PPO on the exact posterior over GridNavi goal cells",
    ),
    (
        "bayes_optimal",
        f"{_AGENTS}:build_bayes_optimal",
        "the exact Bayes-optimal GridNavi policy (not trained)",
    ),
    ("random", f"{_AGENTS}:build_random", "uniformly random actions (not trained)"),
)
#: The names of the shipped algorithms, in order (the config schema's ``ALGO_NAMES``).
SHIPPED_ALGORITHMS: tuple[str, ...] = ()
for _name, _path, _description in _SHIPPED:
    register_algorithm(_name, _path, description=_description)
SHIPPED_ALGORITHMS = tuple(name for name, _, _ in _SHIPPED)
