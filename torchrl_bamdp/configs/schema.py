"""Typed, validated configuration.

Hydra composes the YAML files in this folder; :func:`load_config` then turns the result into
these dataclasses and rejects, before anything runs, unknown keys (with the closest valid name),
wrong types, out-of-range values and inconsistent combinations, naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrl_bamdp.algorithms import ALGORITHM_NAME, SHIPPED_ALGORITHMS, algorithm_names
from torchrl_bamdp.configs.compose import composed_defaults, merge_onto
from torchrl_bamdp.registry import (
    DEFAULT_IMAGE_SIZE,
    FACTORY_PATH,
    OBSERVATIONS,
    SHIPPED_TASK_FAMILIES,
    TaskFamily,
    get_task_family,
    load_factory,
    task_family_names,
)
from torchrl_bamdp.task_distributions import ALL_TASKS


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, out of range or inconsistent.

    Examples
    --------
    >>> try:
    ...     load_config({"env": {"num_envs": 0}})
    ... except ConfigError as err:
    ...     print(err)
    config.env.num_envs must be >= 1 (got 0)
    >>> issubclass(ConfigError, ValueError)
    True
    """


#: Task families whose simulators may run in worker processes (``env.workers``).
#: The shipped families that step MuJoCo simulators (they declare the ``workers`` option).
MUJOCO_ENV_NAMES = tuple(
    name for name in SHIPPED_TASK_FAMILIES if "workers" in get_task_family(name).options
)
#: The shipped task families (one list: the registry's, which registers them).
ENV_NAMES = SHIPPED_TASK_FAMILIES
#: The shipped algorithms (one list: the algorithm registry's, which registers them).
ALGO_NAMES = SHIPPED_ALGORITHMS
#: Algorithms with VariBAD's learned belief: ours and the original's configuration of it.
VARIBAD_ALGOS = ("varibad", "varibad_original", "varibad_switching")
#: Algorithms defined only on a task-switching BAMDP (``env.switching_hazard > 0``).
SWITCHING_ONLY_ALGOS = ("varibad_switching",)
#: Algorithms that cannot act on a task-switching BAMDP (the exact DP assumes a fixed task).
NOT_SWITCHING_ALGOS = ("bayes_optimal",)
#: GridNavi's side length when its config does not set one (the paper's 5 x 5 grid).
DEFAULT_GRID_SIZE = 5
#: ``env.bamdp_end``: how the last step of a task ends it for PPO's value targets.
BAMDP_ENDS = ("truncated", "terminated")
#: ``env.check_actions``: what every step checks of an action (``BAMDPEnv``): shape, dtype and
#: values (one host sync per step), shape and dtype only, or nothing.
CHECK_ACTIONS = ("full", "shape", "off")
POLICY_DISTS = ("tanh_normal", "gaussian")
ADVANTAGE_NORMS = ("minibatch", "batch")
#: What a PPO minibatch of an agent whose PPO re-encodes its memory (``encoder_grad``) holds.
RECURRENT_MINIBATCHES = ("tasks", "steps")
#: How PPO's gradient norm is clipped (``algo.ppo.grad_clip``): over all the parameters it
#: trains at once, or per network (actor + critic; the encoder PPO trains, with encoder_grad).
GRAD_CLIPS = ("joint", "per_network")
#: Algorithms defined on GridNavi only (they compute the exact posterior over its goal cells).
GRIDWORLD_ONLY_ALGOS = ("belief_oracle", "bayes_optimal")
REWARD_DECODERS = ("auto", "grid_cells", "mse", "none")
#: ELBO semantics (``algo.elbo``; the maths is in ``ELBOLoss``'s docstring). The first value of
#: each is ours (the default), the other the original's.
ELBO_TRAJECTORY_REDUCTIONS = ("mean", "sum")
ELBO_SUBSAMPLE_MODES = ("rescaled", "original")
MSE_REDUCTIONS = ("sum", "mean")
#: What VariBAD's policy reads of the belief (``algo.policy_belief``; see ``varibad_transforms``).
POLICY_BELIEFS = ("auto", "latent", "decoded", "latent+decoded")
#: RL2's algorithms: ours, and the original's configuration of it (GridNavi).
RL2_ALGOS = ("rl2", "rl2_original")
#: ``algo.rl2_memory``: what RL2's policy reads of its memory: the GRU's hidden state, or
#: ``relu(cat(mean, logvar))`` of the encoder's latent heads (the original's).
RL2_MEMORIES = ("hidden", "latent_relu")
#: Task families whose original RL2 configuration is transcribed (``algo=rl2_original``).
RL2_ORIGINAL_ENVS = ("gridworld", "cheetah_vel")
LOGGER_BACKENDS = ("csv", "wandb")
WANDB_MODES = ("offline", "online", "disabled")
ACTIVATIONS = ("tanh", "relu", "elu")
ON_NONFINITE = ("skip", "stop")
#: ``train.collector``: where training collection runs (``trainers/collection.py``): ``single``,
#: one TorchRL ``Collector`` in the training process; ``process``, ``train.num_collectors``
#: worker processes (TorchRL's ``MultiSyncCollector``); ``ray``, as many Ray actors
#: (TorchRL's ``RayCollector``, ``pip install '.[distributed]'``); ``process_async``, one worker
#: process that collects the next batch while the trainer updates on this one (TorchRL's
#: ``MultiAsyncCollector``; the policy acts one update behind).
COLLECTORS = ("single", "process", "ray", "process_async")
#: ``cpu``, ``cuda``, ``cuda:<index>``, ``mps`` (what ``torch.device`` accepts for this project).
DEVICE_PATTERN = re.compile(r"(cpu|mps|cuda)(:\d+)?")
MAX_SEED = 2**63 - 1  # torch.manual_seed and torch.Generator.manual_seed take a signed 64-bit int
#: Algorithms that run on image observations (``env.observation=pixels``): their networks embed
#: frames with a CNN (``algo.cnn``). The others read the state as a vector (RL2 appends the done
#: flag to it, the exact GridNavi belief reads the cell) or reproduce the official
#: implementation (``varibad_original``), which has no pixel tasks.
PIXEL_ALGOS = ("varibad", "oracle", "random")
#: ``algo.cnn.policy``: the policy's frame embedding. ``separate``: a CNN of its own, trained by
#: PPO (shared by actor and critic); ``shared``: the belief encoder's CNN features of the frame
#: (trained by the ELBO only; PPO reads them as a stored input, as it reads the belief).
CNN_POLICIES = ("separate", "shared")


@dataclass
class EnvConfig:
    """Task family and BAMDP horizon.

    ``workers`` (MuJoCo families only) steps the simulators in that many worker processes
    (bit-identical results; 0: in the training process, see
    :class:`~torchrl_bamdp.envs.MujocoTaskEnv`).

    ``train_tasks`` is the task distribution training samples (and the in-distribution
    meta-test), ``test_tasks`` the out-of-distribution ones ``bamdp-eval`` reports next to it,
    ``split_seed`` the seed of the seeded ones (which GridNavi goals are held out): names the
    family declares (:attr:`~torchrl_bamdp.registry.TaskFamily.distribution_names`; see
    :mod:`torchrl_bamdp.task_distributions`). They are task-family settings, not evaluation
    settings, because a run's training distribution is what the OOD ones are out of: declared
    next to it, a run directory says what it was trained on and what it is tested on.

    ``switching_hazard`` (0: off) makes the BAMDP a task-switching one
    (:class:`~torchrl_bamdp.envs.SwitchingBAMDPEnv`): one rollout of ``episode_length`` steps
    (``episodes_per_task`` must be 1) whose task is redrawn from the task distribution with
    this probability after every step, with no signal; the family must declare itself
    switchable (:attr:`~torchrl_bamdp.registry.TaskFamily.switchable`).

    Examples
    --------
    >>> load_config({"env": {"episodes_per_task": 2}}).env.horizon
    30
    >>> switching = {"switching_hazard": 0.05, "episode_length": 200, "episodes_per_task": 1}
    >>> load_config({"env": switching}).env.horizon
    200
    >>> try:
    ...     load_config({"env": {**switching, "switching_hazard": 5}})
    ... except ConfigError as err:
    ...     print(err)
    config.env.switching_hazard must be a probability in [0, 1] (got 5.0)
    >>> split = {"train_tasks": "heldout_train", "test_tasks": ["heldout_test"]}
    >>> env = load_config({"env": split, "train": {"eval_tasks": 80}}).env
    >>> env.train_tasks, env.test_tasks
    ('heldout_train', ['heldout_test'])
    >>> try:
    ...     load_config({"env": {"test_tasks": ["held_out"]}})
    ... except ConfigError as err:
    ...     print(str(err).split(" (declared")[0])
    config.env.test_tasks: 'held_out' is not a task distribution of env.name='gridworld'
    >>> EnvConfig(name="cheetah_vel", grid_size=7).validate("config.env")
    Traceback (most recent call last):
    ...
    torchrl_bamdp.configs.schema.ConfigError: config.env.grid_size is a GridNavi option, not one \
of env.name='cheetah_vel' (its options: ['workers']): leave it null (got 7)
    """

    name: str = "gridworld"
    num_envs: int = 64
    episode_length: int = 15
    episodes_per_task: int = 4
    #: GridNavi's side length (its own option): ``None`` for every family that does not declare
    #: it (``TaskFamily.options``), 5 by default for GridNavi.
    grid_size: int | None = None
    workers: int = 0
    #: The end of a task: ``truncated`` (a time limit: value targets bootstrap from the last
    #: state) or ``terminated`` (no bootstrap; the original on GridNavi). Every ``env/*.yaml``
    #: says ``truncated``; VariBAD on GridNavi, the default composition that these dataclass
    #: defaults equal, is ``terminated`` (``tuning_algo/varibad_gridworld.yaml``: measured).
    bamdp_end: str = "terminated"
    #: What every step checks of an action: ``full`` (values too: one host sync per step),
    #: ``shape`` (shape and dtype: no sync; for GPU runs), ``off``.
    check_actions: str = "full"
    #: Step without host syncs (``BAMDPEnv(sync_free=...)``; ``null``: on accelerators only).
    sync_free: bool | None = None
    #: A user's task family by import path, ``"package.module:function"`` (then ``name`` is its
    #: label): no registration needed, and ``config.json`` keeps it for resume and bamdp-eval.
    factory: str | None = None
    #: Keyword options of the family's factory (a user's family; e.g. ``{"size": 7}``).
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: The task distribution to train on (and to meta-test in distribution): ``all`` (the
    #: family's full one) or one it declares, e.g. GridNavi's ``heldout_train``.
    train_tasks: str = ALL_TASKS
    #: Out-of-distribution test distributions ``bamdp-eval`` reports next to ``train_tasks``.
    test_tasks: list[str] = field(default_factory=list)
    #: Seed of the seeded task distributions (GridNavi's ``heldout_*``: which goals are held out).
    split_seed: int = 0
    #: Per-step probability that the task is redrawn, unannounced (0: a fixed task per BAMDP).
    switching_hazard: float = 0.0
    #: What the agent observes (:data:`~torchrl_bamdp.registry.OBSERVATIONS`): ``state`` (the
    #: state vector) or ``pixels`` (``3 x image_size x image_size`` uint8 frames of it, rendered
    #: batched in torch; the families that declare the option: GridNavi, the point robots).
    observation: str = "state"
    #: Side of the frames with ``observation=pixels`` (``null``: 32); ``null`` with ``state``.
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.observation == "pixels" and self.image_size is None:
            self.image_size = DEFAULT_IMAGE_SIZE
        family = self.family
        declares = family is not None and "grid_size" in family.options
        if self.grid_size is None and declares:
            self.grid_size = DEFAULT_GRID_SIZE
        elif self.grid_size == DEFAULT_GRID_SIZE and not declares:
            # Configs (and checkpoints) before 2026-12-01 wrote GridNavi's default into every
            # family's env section; it meant "no grid" there.
            self.grid_size = None

    def validate(self, path: str) -> None:
        if self.factory is None:
            names = task_family_names()
            if self.name not in names:
                raise _unregistered(
                    path,
                    self.name,
                    names,
                    "task family",
                    "factory",
                    "registry.register_task_family",
                )
        else:
            if not FACTORY_PATH.fullmatch(self.factory):
                raise ConfigError(
                    f"{path}.factory must be an import path 'package.module:function' (got "
                    f"{self.factory!r})"
                )
            if not self.name.strip():
                raise ConfigError(f"{path}.name must be a non-empty label (got {self.name!r})")
            try:  # early: a typo in the path fails here, not after the run directory is made
                load_factory(self.factory, what=f"{path}.factory")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        _choice(path, "bamdp_end", self.bamdp_end, BAMDP_ENDS)
        _choice(path, "check_actions", self.check_actions, CHECK_ACTIONS)
        _choice(path, "observation", self.observation, OBSERVATIONS)
        if self.kwargs and self.factory is None and self.name in ENV_NAMES:
            raise ConfigError(
                f"{path}.kwargs are options of a task family of your own (with {path}.factory); "
                f"the shipped family {self.name!r} takes its options as {path} fields (got "
                f"{self.kwargs!r})"
            )
        _at_least(path, "num_envs", self.num_envs, 1)
        _at_least(path, "episode_length", self.episode_length, 1)
        _at_least(path, "episodes_per_task", self.episodes_per_task, 1)
        if self.grid_size is not None:
            _at_least(path, "grid_size", self.grid_size, 3)
        _at_least(path, "workers", self.workers, 0)
        # Fields that are one family's own options stay unset for the others; what a family
        # takes is declared by its registration (TaskFamily.options), not its name.
        own = self.family.options if self.family is not None else ()
        for option, default, owner in (("grid_size", None, "GridNavi"), ("workers", 0, "MuJoCo")):
            value = getattr(self, option)
            if option not in own and value != default:
                leave = "null" if default is None else f"at {default}"
                raise ConfigError(
                    f"{path}.{option} is a {owner} option, not one of env.name={self.name!r} "
                    f"(its options: {list(own) or 'none'}): leave it {leave} (got {value})"
                )
        self._validate_observation(path, own)
        if self.workers > self.num_envs:
            raise ConfigError(
                f"{path}.workers must be <= {path}.num_envs = {self.num_envs} (got "
                f"{self.workers}): each worker process steps at least one simulator"
            )
        self._validate_distributions(path)
        self._validate_switching(path)

    def _validate_switching(self, path: str) -> None:
        hazard = self.switching_hazard
        if not 0.0 <= hazard <= 1.0:
            raise ConfigError(
                f"{path}.switching_hazard must be a probability in [0, 1] (got {hazard})"
            )
        if hazard == 0.0:
            return
        if self.episodes_per_task != 1:
            raise ConfigError(
                f"{path}.switching_hazard={hazard} makes the BAMDP one rollout of "
                f"{path}.episode_length steps with no inner episodes: set "
                f"{path}.episodes_per_task=1 (got {self.episodes_per_task}) and the rollout length "
                f"with {path}.episode_length"
            )
        family = self.family
        if family is not None and not family.switchable:
            switchable = [n for n in task_family_names() if get_task_family(n).switchable]
            raise ConfigError(
                f"{path}.switching_hazard={hazard} needs a task family that can change its task "
                f"mid-rollout, and env.name={self.name!r} declares none (switchable families: "
                f"{switchable}; a family of your own registers a set_tasks, see "
                "torchrl_bamdp.envs.set_tasks, and switchable=True)"
            )
        if self.test_tasks:
            raise ConfigError(
                f"{path}.test_tasks: out-of-distribution meta-tests are not wired for a switching "
                f"BAMDP ({path}.switching_hazard={hazard}); leave it empty (got {self.test_tasks})"
            )

    @property
    def switching(self) -> bool:
        """Whether the task switches within a rollout (``switching_hazard > 0``)."""
        return self.switching_hazard > 0.0

    def _validate_observation(self, path: str, own: tuple[str, ...]) -> None:
        """``observation`` / ``image_size``: pixels only where the family renders them, a frame
        size only with pixels, and large enough for the grid."""
        if self.observation != "state" and "observation" not in own and self.family is not None:
            renders = [
                n for n in task_family_names() if "observation" in get_task_family(n).options
            ]
            raise ConfigError(
                f"{path}.observation={self.observation!r}: env.name={self.name!r} renders no "
                f"frames (the families that do: {renders}); leave it 'state'"
            )
        if self.image_size is None:
            return
        if self.observation != "pixels":
            raise ConfigError(
                f"{path}.image_size is the side of the frames of {path}.observation='pixels': "
                f"leave it null with {path}.observation={self.observation!r} (got "
                f"{self.image_size})"
            )
        _at_least(path, "image_size", self.image_size, 8)
        if self.grid_size is not None and self.image_size < 2 * self.grid_size:
            raise ConfigError(
                f"{path}.image_size must be >= 2 x {path}.grid_size = {2 * self.grid_size} (a "
                f"border and at least one pixel inside each cell; got {self.image_size})"
            )

    def _validate_distributions(self, path: str) -> None:
        _at_least(path, "split_seed", self.split_seed, 0)
        if self.train_tasks in self.test_tasks:
            raise ConfigError(
                f"{path}.test_tasks must not hold {path}.train_tasks={self.train_tasks!r}: it is "
                f"the in-distribution column of every OOD report already (got {self.test_tasks})"
            )
        if len(set(self.test_tasks)) != len(self.test_tasks):
            raise ConfigError(f"{path}.test_tasks repeats a name (got {self.test_tasks})")
        family = self.family
        if family is None:  # a family by import path: its factory checks the names when built
            return
        seeded = []
        fields = (("train_tasks", [self.train_tasks]), ("test_tasks", self.test_tasks))
        for field_name, names in fields:
            for name in names:
                try:
                    distribution = family.distribution(name, f"{path}.{field_name}")
                except ValueError as err:
                    raise ConfigError(str(err)) from None
                seeded += [name] if distribution.seeded else []
        if self.split_seed != 0 and not seeded:
            names = [d.name for d in family.task_distributions if d.seeded]
            raise ConfigError(
                f"{path}.split_seed draws the seeded task distributions only ({names or 'none'} "
                f"of env.name={self.name!r}), and neither {path}.train_tasks nor "
                f"{path}.test_tasks names one: leave it at 0 (got {self.split_seed})"
            )

    @property
    def horizon(self) -> int:
        return self.episode_length * self.episodes_per_task

    @property
    def family(self) -> TaskFamily | None:
        """The registered family of ``name`` (its declared traits), or ``None`` for a family
        named by import path (``factory``), whose traits the built env declares."""
        if self.factory is not None or self.name not in task_family_names():
            return None
        return get_task_family(self.name)


@dataclass
class EncoderConfig:
    """The GRU belief encoder.

    Examples
    --------
    >>> load_config({"algo": {"encoder": {"latent_dim": 8}}}).algo.encoder.latent_dim
    8
    >>> EncoderConfig(obs_embed=0, reward_embed=0).validate("config.algo.encoder")
    Traceback (most recent call last):
    ...
    torchrl_bamdp.configs.schema.ConfigError: config.algo.encoder: obs_embed + action_embed + \
reward_embed must be > 0
    """

    latent_dim: int = 5
    hidden_size: int = 64
    obs_embed: int = 32
    action_embed: int = 0
    reward_embed: int = 8
    #: The GRU also reads each transition's inner-episode-done flag (the original's
    #: ``add_done_info`` with more than one episode per task); needs ``obs_embed > 0``.
    done_input: bool = False

    def validate(self, path: str) -> None:
        _at_least(path, "latent_dim", self.latent_dim, 1)
        if self.done_input and self.obs_embed == 0:
            raise ConfigError(
                f"{path}.done_input embeds the flag with the state: it needs {path}.obs_embed "
                "> 0 (got 0)"
            )
        _at_least(path, "hidden_size", self.hidden_size, 1)
        for name in ("obs_embed", "action_embed", "reward_embed"):
            _at_least(path, name, getattr(self, name), 0)
        if self.obs_embed + self.action_embed + self.reward_embed == 0:
            raise ConfigError(f"{path}: obs_embed + action_embed + reward_embed must be > 0")


@dataclass
class DecoderConfig:
    """Which decoders the ELBO reconstructs with.

    Examples
    --------
    >>> DecoderConfig(reward="none", task=True).validate("config.algo.decoders")  # task only
    >>> DecoderConfig(reward="none").validate("config.algo.decoders")
    Traceback (most recent call last):
    ...
    torchrl_bamdp.configs.schema.ConfigError: config.algo.decoders: at least one decoder is \
needed (reward, state or task)
    """

    reward: str = "auto"
    reward_hidden: list[int] = field(default_factory=lambda: [64, 64])
    state: bool = False
    state_hidden: list[int] = field(default_factory=lambda: [64, 32])
    task: bool = False
    task_hidden: list[int] = field(default_factory=lambda: [64, 32])
    #: Embed the states and the action before the MSE reward / state decoder's MLP, as the
    #: original does on MuJoCo (0: no embedding, the inputs go to the MLP as they are).
    reward_obs_embed: int = 0
    reward_action_embed: int = 0
    state_obs_embed: int = 0
    state_action_embed: int = 0
    #: The MSE reward and state decoders read each state with its inner-episode-done flag (and
    #: the state decoder predicts it), as the original's states with ``add_done_info`` (more
    #: than one episode per task). The per-cell GridNavi decoder reads no state.
    done_input: bool = False

    def validate(self, path: str) -> None:
        _choice(path, "reward", self.reward, REWARD_DECODERS)
        for name in ("reward_obs_embed", "reward_action_embed", "state_obs_embed"):
            _at_least(path, name, getattr(self, name), 0)
        _at_least(path, "state_action_embed", self.state_action_embed, 0)
        if self.reward == "none" and not self.state and not self.task:
            raise ConfigError(f"{path}: at least one decoder is needed (reward, state or task)")
        for name in ("reward_hidden", "state_hidden", "task_hidden"):
            for width in getattr(self, name):
                _at_least(path, name, width, 1)


@dataclass
class ELBOConfig:
    """Encoder/decoder optimisation and the ELBO's semantics.

    ``kl_reduction`` and ``task_reduction`` reduce the KL and the task term over the
    trajectories of a batch (``mean``: ours; ``sum``: the original's); ``subsample_mode`` is how
    ``elbo_subsample``/``decode_subsample`` pick steps (``rescaled``: ours, shared steps without
    replacement, rescaled sums, every KL term; ``original``: per trajectory with replacement, the
    KL at the sampled steps only, no rescaling); ``mse_reduction`` reduces the squared errors of
    the MSE decoders over dimensions (``sum``: ours; ``mean``: the original's). It lives here,
    not in ``algo.decoders``, because it changes the objective, not the networks (the decoders
    section is compared as architecture when a checkpoint resumes).

    Examples
    --------
    >>> ELBOConfig().max_grad_norm
    5000.0
    >>> try:
    ...     load_config({"algo": {"elbo": {"lr": 0}}})
    ... except ConfigError as err:
    ...     print(err)
    config.algo.elbo.lr must be > 0 (got 0.0)
    >>> try:
    ...     load_config({"algo": {"elbo": {"kl_reduction": "avg"}}})
    ... except ConfigError as err:
    ...     print(err)
    config.algo.elbo.kl_reduction must be one of ['mean', 'sum'] (got 'avg')
    """

    lr: float = 3e-3
    kl_weight: float = 0.01
    reward_weight: float = 1.0
    state_weight: float = 1.0
    task_weight: float = 1.0
    batch_trajectories: int = 100
    buffer_trajectories: int = 1000
    updates_per_iteration: int = 4
    elbo_subsample: int | None = 15
    decode_subsample: int | None = None
    kl_reduction: str = "mean"
    task_reduction: str = "mean"
    subsample_mode: str = "rescaled"
    mse_reduction: str = "sum"
    # Catches spikes only: typical total norms are 0.5k-3k (p50-p99), spikes 5k-15k (see
    # configs/algo/varibad.yaml for the measurement).
    max_grad_norm: float | None = 5000.0
    #: Truncated back-propagation through time in the ELBO's re-encoding: the GRU state is
    #: detached every this many transitions (the original: 50 on MuJoCo); null: never.
    tbptt_steps: int | None = None
    #: Frames collected before the first ELBO update (the original: 5000).
    precollect_frames: int = 0
    #: ``varibad_switching`` only: decode at most this many transitions from each belief step on
    #: (``None``: to the end of the rollout; see ``objectives.SwitchingELBOLoss``).
    decode_window: int | None = None
    #: ``varibad_switching`` only: the hazard of its switching prior (``None``: the env's).
    prior_hazard: float | None = None

    def validate(self, path: str) -> None:
        _positive(path, "lr", self.lr)
        for name in ("kl_weight", "reward_weight", "state_weight", "task_weight"):
            _at_least(path, name, getattr(self, name), 0.0)
        _at_least(path, "batch_trajectories", self.batch_trajectories, 1)
        _at_least(path, "buffer_trajectories", self.buffer_trajectories, 1)
        _at_least(path, "updates_per_iteration", self.updates_per_iteration, 0)
        for name in ("elbo_subsample", "decode_subsample"):
            if getattr(self, name) is not None:
                _at_least(path, name, getattr(self, name), 1)
        if self.max_grad_norm is not None:
            _positive(path, "max_grad_norm", self.max_grad_norm)
        _choice(path, "kl_reduction", self.kl_reduction, ELBO_TRAJECTORY_REDUCTIONS)
        _choice(path, "task_reduction", self.task_reduction, ELBO_TRAJECTORY_REDUCTIONS)
        _choice(path, "subsample_mode", self.subsample_mode, ELBO_SUBSAMPLE_MODES)
        _choice(path, "mse_reduction", self.mse_reduction, MSE_REDUCTIONS)
        if self.tbptt_steps is not None:
            _at_least(path, "tbptt_steps", self.tbptt_steps, 1)
        _at_least(path, "precollect_frames", self.precollect_frames, 0)
        if self.decode_window is not None:
            _at_least(path, "decode_window", self.decode_window, 1)
        if self.prior_hazard is not None and not 0.0 <= self.prior_hazard <= 1.0:
            raise ConfigError(
                f"{path}.prior_hazard must be null (env.switching_hazard) or a probability in "
                f"[0, 1] (got {self.prior_hazard})"
            )


@dataclass
class PPOConfig:
    """Policy optimisation (TorchRL ClipPPOLoss + GAE) and the actor-critic.

    ``entropy_coef_final`` (``None``: a constant ``entropy_coef``) anneals the entropy
    coefficient linearly from ``entropy_coef`` at the first batch to ``entropy_coef_final`` at
    ``train.total_frames`` (kept after), by frame count, so a resumed run continues it exactly.
    ``time_features`` appends the time of the task (fraction of the inner episode taken, index
    of the inner episode) to the hyper-state of the policy and the critic
    (:class:`~torchrl_bamdp.transforms.TimeAwareHyperState`). ``critic_task`` gives the critic
    (not the policy) the true task as an extra input during training: a privileged critic,
    which removes the variance of the unknown task from the advantages.

    Examples
    --------
    >>> load_config({"algo": {"ppo": {"hidden": [32]}}}).algo.ppo.hidden
    [32]
    >>> ppo = load_config({"algo": {"ppo": {"entropy_coef": 0.03, "entropy_coef_final": 0.0}}})
    >>> ppo.algo.ppo.entropy_coef_final
    0.0
    >>> try:
    ...     load_config({"algo": {"ppo": {"gamma": 1.5}}})
    ... except ConfigError as err:
    ...     print(err)
    config.algo.ppo.gamma must be in [0, 1] (got 1.5)
    """

    lr: float = 1e-3
    epochs: int = 4
    minibatches: int = 16
    clip_epsilon: float = 0.2
    value_clip: float | None = None
    gamma: float = 0.99
    lmbda: float = 0.95
    entropy_coef: float = 0.03
    entropy_coef_final: float | None = 0.0
    critic_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True
    normalize_reward: bool = False
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    normalize_input: bool = True
    encoder_grad: bool = False
    time_features: bool = True
    critic_task: bool = True
    #: Continuous actions: ``tanh_normal`` (ours: a TanhNormal with a state-dependent scale in
    #: the action bounds) or ``gaussian`` (the original: a Gaussian with a state-independent
    #: learned std, ``init_std`` at the start, no squashing; the env clips).
    policy_dist: str = "tanh_normal"
    init_std: float = 1.0
    #: The original embeds the state and the belief separately (16 on GridNavi, 64 on MuJoCo)
    #: before the MLP, one embedding shared by actor and critic; 0: none.
    input_embed: int = 0
    #: The policy's hyper-state also holds the inner-episode-done flag (the original's
    #: ``add_done_info``: 1 at the start state of every inner episode but the first).
    done_input: bool = False
    #: Advantages standardised per ``minibatch`` (TorchRL's ClipPPOLoss) or over the whole
    #: ``batch`` (the original), with ``normalize_advantage``.
    advantage_norm: str = "minibatch"
    #: Adam's eps of the PPO optimiser (the original: 1e-8).
    adam_eps: float = 1e-5
    #: With ``encoder_grad`` (RL2: PPO trains the recurrent memory), what a minibatch is:
    #: ``tasks`` (ours: whole tasks, each re-encoded with gradients; ``minibatches`` must
    #: divide ``env.num_envs``) or ``steps`` (the original: the whole batch re-encoded with
    #: gradients before every minibatch step, the minibatch a random subset of all its steps,
    #: so every step mixes tasks; ``minibatches`` re-encodings of the batch per epoch).
    recurrent_minibatch: str = "tasks"
    #: ``joint``: one gradient norm over every parameter PPO trains, clipped at
    #: ``max_grad_norm`` (ours). ``per_network`` (the original, which has one optimiser per
    #: network): the actor + critic and, with ``encoder_grad``, the encoder each clipped at
    #: ``max_grad_norm`` on their own, so a large gradient through a long GRU does not shrink
    #: the policy's step. Without ``encoder_grad`` both are the same.
    grad_clip: str = "joint"

    def validate(self, path: str) -> None:
        _positive(path, "lr", self.lr)
        _choice(path, "policy_dist", self.policy_dist, POLICY_DISTS)
        _positive(path, "init_std", self.init_std)
        _at_least(path, "input_embed", self.input_embed, 0)
        _choice(path, "advantage_norm", self.advantage_norm, ADVANTAGE_NORMS)
        _positive(path, "adam_eps", self.adam_eps)
        _choice(path, "recurrent_minibatch", self.recurrent_minibatch, RECURRENT_MINIBATCHES)
        _choice(path, "grad_clip", self.grad_clip, GRAD_CLIPS)
        if self.recurrent_minibatch == "steps" and not self.encoder_grad:
            raise ConfigError(
                f"{path}.recurrent_minibatch='steps' is an option of {path}.encoder_grad=true "
                f"(PPO re-encodes the memory, e.g. algo=rl2); with {path}.encoder_grad=false "
                "minibatches are random steps already: leave it 'tasks'"
            )
        _at_least(path, "epochs", self.epochs, 1)
        _at_least(path, "minibatches", self.minibatches, 1)
        _in_open_unit(path, "clip_epsilon", self.clip_epsilon)
        if self.value_clip is not None:
            _positive(path, "value_clip", self.value_clip)
        for name in ("gamma", "lmbda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{path}.{name} must be in [0, 1] (got {value})")
        _at_least(path, "entropy_coef", self.entropy_coef, 0.0)
        if self.entropy_coef_final is not None:
            _at_least(path, "entropy_coef_final", self.entropy_coef_final, 0.0)
        _at_least(path, "critic_coef", self.critic_coef, 0.0)
        _positive(path, "max_grad_norm", self.max_grad_norm)
        _choice(path, "activation", self.activation, ACTIVATIONS)
        for width in self.hidden:
            _at_least(path, "hidden", width, 1)


@dataclass
class CNNConfig:
    """The convolutional frame embedding of image observations (``env.observation=pixels``).

    Each frame (``3 x S x S``, scaled to ``[0, 1]``) passes through ``len(channels)`` convolutions
    (``channels[i]`` filters of ``kernel_sizes[i]`` with stride ``strides[i]``, padding
    ``(kernel - stride + 1) // 2``, ReLU after each), is flattened and mapped by a ``Linear``
    + ReLU to a feature vector: ``algo.encoder.obs_embed`` features in the belief encoder,
    ``features`` in the policy (and in an MSE reward decoder). ``policy`` is where the policy's
    features come from (:data:`CNN_POLICIES`): ``separate``, a CNN of the policy's own, trained
    by PPO and shared by actor and critic; ``shared``, the belief encoder's CNN (trained by the
    ELBO), whose features of the frame the hyper-state holds in place of the frame. Unused with
    ``env.observation=state``.

    Examples
    --------
    >>> load_config({"env": {"observation": "pixels"}}).algo.cnn.channels
    [8, 16]
    >>> try:
    ...     load_config({"env": {"observation": "pixels"}, "algo": {"cnn": {"policy": "both"}}})
    ... except ConfigError as err:
    ...     print(err)
    config.algo.cnn.policy must be one of ['separate', 'shared'] (got 'both')
    """

    policy: str = "shared"
    channels: list[int] = field(default_factory=lambda: [8, 16])
    kernel_sizes: list[int] = field(default_factory=lambda: [4, 3])
    strides: list[int] = field(default_factory=lambda: [4, 2])
    features: int = 64

    def validate(self, path: str) -> None:
        _choice(path, "policy", self.policy, CNN_POLICIES)
        if not self.channels:
            raise ConfigError(f"{path}.channels must list at least one convolution (got [])")
        lengths = {len(self.channels), len(self.kernel_sizes), len(self.strides)}
        if len(lengths) != 1:
            raise ConfigError(
                f"{path}.channels, {path}.kernel_sizes and {path}.strides must have one entry per "
                f"convolution (got {self.channels}, {self.kernel_sizes}, {self.strides})"
            )
        for name in ("channels", "kernel_sizes", "strides"):
            for value in getattr(self, name):
                _at_least(path, name, value, 1)
        _at_least(path, "features", self.features, 1)

    def output_size(self, image_size: int) -> int:
        """Side of the last convolution's output on ``image_size`` frames (< 1: too small).

        Examples
        --------
        >>> CNNConfig().output_size(32)  # 32 -> 8 (4x4, stride 4) -> 4 (3x3, stride 2)
        4
        """
        size = image_size
        for kernel, stride in zip(self.kernel_sizes, self.strides, strict=True):
            padding = max(0, (kernel - stride + 1) // 2)
            size = (size + 2 * padding - kernel) // stride + 1
        return size


@dataclass
class AlgoConfig:
    """The algorithm: which belief, and how each part is trained.

    ``policy_belief`` (VariBAD) is what the policy reads of the belief: ``latent`` (the
    original: mean and log-variance), ``decoded`` (the reward decoder's per-cell goal
    probabilities of the mean; GridNavi) or ``latent+decoded``; ``auto`` (default) is
    ``decoded`` for VariBAD with the per-cell GridNavi decoder and ``latent`` otherwise
    (:attr:`Config.policy_belief`).

    Examples
    --------
    >>> load_config({"algo": {"name": "rl2", "ppo": {"encoder_grad": True}}}).algo.name
    'rl2'
    >>> try:
    ...     load_config({"algo": {"name": "varibab"}})
    ... except ConfigError as err:
    ...     print(str(err).split(" (registered")[0])
    config.algo.name='varibab' is not a registered algorithm; did you mean 'varibad'?
    >>> try:
    ...     load_config({"algo": {"name": "mine", "builder": "my_pkg.make_agent"}})
    ... except ConfigError as err:
    ...     print(err)
    config.algo.builder must be an import path 'package.module:function' (got 'my_pkg.make_agent')
    """

    name: str = "varibad"
    #: An algorithm of your own by import path, ``"package.module:function"`` (then ``name`` is
    #: its label): ``function(config, env) -> Agent``, no registration needed, and
    #: ``config.json`` keeps it for resume, bamdp-eval and bamdp-plot.
    builder: str | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoders: DecoderConfig = field(default_factory=DecoderConfig)
    elbo: ELBOConfig = field(default_factory=ELBOConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    #: The CNN of image observations (``env.observation=pixels``; unused otherwise).
    cnn: CNNConfig = field(default_factory=CNNConfig)
    policy_belief: str = "auto"
    #: RL2: what the policy reads of the memory (``hidden``, or ``latent_relu``: the original's
    #: ReLU of the latent heads' mean and log-variance).
    rl2_memory: str = "hidden"
    #: RL2: whether the policy reads the observation beside the memory (the original RL2 on
    #: GridNavi does not: ``pass_state_to_policy=False``; the GRU has read it).
    policy_state: bool = True

    def validate(self, path: str) -> None:
        if self.builder is None:
            names = algorithm_names()
            if self.name not in names:
                raise _unregistered(
                    path, self.name, names, "algorithm", "builder", "algorithms.register_algorithm"
                )
        else:
            if not FACTORY_PATH.fullmatch(self.builder):
                raise ConfigError(
                    f"{path}.builder must be an import path 'package.module:function' (got "
                    f"{self.builder!r})"
                )
            # A shipped name stands for the shipped algorithm's results (DESIGN.md §7), and the
            # config's cross-checks switch on it: a builder of your own needs its own label.
            if self.name in ALGO_NAMES or not ALGORITHM_NAME.fullmatch(self.name):
                raise ConfigError(
                    f"{path}.name={self.name!r} cannot label the algorithm of {path}.builder="
                    f"{self.builder!r}: give it a name of its own, a word of letters, digits, "
                    f"'_' or '-' that is not a shipped algorithm (e.g. {path}.name=my_agent)"
                )
            try:  # early: a typo in the path fails here, not after the run directory is made
                load_factory(self.builder, what=f"{path}.builder")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        _choice(path, "policy_belief", self.policy_belief, POLICY_BELIEFS)
        _choice(path, "rl2_memory", self.rl2_memory, RL2_MEMORIES)
        rl2_options_set = self.rl2_memory != "hidden" or not self.policy_state
        if rl2_options_set and self.name not in RL2_ALGOS and self.builder is None:
            raise ConfigError(
                f"{path}.rl2_memory and {path}.policy_state are RL2 options (algo.name in "
                f"{list(RL2_ALGOS)}); {path}.name={self.name!r} takes neither (got "
                f"rl2_memory={self.rl2_memory!r}, policy_state={self.policy_state})"
            )


@dataclass
class TrainConfig:
    """Budget, evaluation and checkpoint cadence, what NaN/inf does (``on_nonfinite``), and
    where collection runs (``collector``, ``num_collectors``, ``ray_address``; see
    :class:`~torchrl_bamdp.trainers.collection.TrainCollector`).

    Examples
    --------
    >>> TrainConfig().eval_stratified is None  # auto: resolved by Config.eval_stratified
    True
    >>> load_config({"train": {"collector": "process", "num_collectors": 2}}).train.collector
    'process'
    >>> try:
    ...     load_config({"train": {"collector": "threads"}})
    ... except ConfigError as err:
    ...     print(err)
    config.train.collector must be one of ['single', 'process', 'ray', 'process_async'] \
(got 'threads')
    >>> try:
    ...     load_config({"train": {"eval_tasks": 20}})
    ... except ConfigError as err:
    ...     print(err)
    train.eval_tasks (20) must be a multiple of the 21 tasks of env.name='gridworld' with \
stratified evaluation (every task is tested equally often), or set train.eval_stratified=false
    """

    total_frames: int = 2_000_000
    max_minutes: float | None = None
    anneal_lr: bool = False
    steps_per_batch: int | None = None
    eval_interval: int = 20
    eval_tasks: int = 210
    eval_stratified: bool | None = None
    eval_episodes: int | None = None
    eval_deterministic: bool = True
    checkpoint_interval: int = 20
    #: Keep the policy that scored best on a *validation* meta-test, run beside every
    #: evaluation (``eval_interval``) and on the final policy: ``validation_tasks`` tasks of
    #: the training distribution from their own seeded stream, apart from the test tasks'.
    #: The run ends with that policy (its test result is ``train()``'s ``eval``); the
    #: checkpoint keeps the last one too, so a resume continues training from it.
    keep_best: bool = False
    #: Tasks of each validation meta-test of ``keep_best`` (``null``: ``eval_tasks``).
    validation_tasks: int | None = None
    progress_bar: bool = True
    num_threads: int = 1
    parallel_updates: bool = True
    on_nonfinite: str = "skip"
    max_skipped_updates: int = 10
    figures: bool = True
    figure_goal: list[int] | None = None
    #: Where training collection runs (:data:`COLLECTORS`; README "Distributed collection").
    collector: str = "single"
    #: Worker processes (``process``) or Ray actors (``ray``), each collecting
    #: ``env.num_envs / num_collectors`` of the tasks of every batch; 1 with ``single``.
    num_collectors: int = 1
    #: ``ray`` only: the Ray cluster to join, from one of its nodes (``"auto"``,
    #: ``"<head-ip>:6379"``);
    #: ``null`` starts a local Ray with ``num_collectors`` CPUs.
    ray_address: str | None = None

    def validate(self, path: str) -> None:
        _at_least(path, "total_frames", self.total_frames, 1)
        _choice(path, "collector", self.collector, COLLECTORS)
        _at_least(path, "num_collectors", self.num_collectors, 1)
        if self.collector == "single" and self.num_collectors != 1:
            raise ConfigError(
                f"{path}.num_collectors={self.num_collectors} needs {path}.collector='process' or "
                f"'ray' (got {path}.collector='single', which collects in this process)"
            )
        if self.collector == "process_async" and self.num_collectors != 1:
            raise ConfigError(
                f"{path}.num_collectors must be 1 with {path}.collector='process_async' (got "
                f"{self.num_collectors}): its one worker collects every batch of all env.num_envs "
                f"tasks while the trainer updates; several workers: {path}.collector='process'"
            )
        if self.ray_address is not None:
            if self.collector != "ray":
                raise ConfigError(
                    f"{path}.ray_address is an option of {path}.collector='ray' (got "
                    f"{path}.collector={self.collector!r}): leave it null"
                )
            if not self.ray_address.strip():
                raise ConfigError(
                    f"{path}.ray_address must be null (a local Ray) or a cluster address such as "
                    "'auto' or '<head-ip>:6379' (got '')"
                )
        if self.collector == "ray" and not module_available("ray"):
            raise ConfigError(
                f"{path}.collector='ray' needs Ray, which is not installed: pip install "
                "'torchrl_bamdp[distributed]' (or '.[distributed]' in a checkout); or use "
                f"{path}.collector='process' (worker processes on this machine)"
            )
        if self.max_minutes is not None:
            _positive(path, "max_minutes", self.max_minutes)
        if self.steps_per_batch is not None:
            _at_least(path, "steps_per_batch", self.steps_per_batch, 1)
        _at_least(path, "eval_interval", self.eval_interval, 0)
        _at_least(path, "eval_tasks", self.eval_tasks, 1)
        if self.eval_episodes is not None:
            _at_least(path, "eval_episodes", self.eval_episodes, 1)
        _at_least(path, "checkpoint_interval", self.checkpoint_interval, 0)
        if self.keep_best and self.eval_interval == 0:
            raise ConfigError(
                f"{path}.keep_best=true selects among the policies validated every "
                f"{path}.eval_interval iterations, but {path}.eval_interval=0 validates only the "
                f"final one: set {path}.eval_interval >= 1 or {path}.keep_best=false"
            )
        if self.validation_tasks is not None:
            if not self.keep_best:
                raise ConfigError(
                    f"{path}.validation_tasks is an option of {path}.keep_best=true (got "
                    f"{path}.keep_best=false): leave it null"
                )
            _at_least(path, "validation_tasks", self.validation_tasks, 1)
        _at_least(path, "num_threads", self.num_threads, 1)
        _choice(path, "on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        _at_least(path, "max_skipped_updates", self.max_skipped_updates, 1)
        if self.figure_goal is not None and len(self.figure_goal) != 2:
            raise ConfigError(
                f"{path}.figure_goal must be a cell [x, y] (got {self.figure_goal!r})"
            )


@dataclass
class LoggerConfig:
    """CSV is always written; W&B on top when ``backend=wandb``.

    Examples
    --------
    >>> LoggerConfig().backend, LoggerConfig().mode
    ('csv', 'offline')
    >>> try:
    ...     load_config({"logger": {"backend": "tensorboard"}})
    ... except ConfigError as err:
    ...     print(err)
    config.logger.backend must be one of ['csv', 'wandb'] (got 'tensorboard')
    """

    backend: str = "csv"
    project: str = "torchrl_bamdp"
    mode: str = "offline"
    group: str | None = None

    def validate(self, path: str) -> None:
        _choice(path, "backend", self.backend, LOGGER_BACKENDS)
        _choice(path, "mode", self.mode, WANDB_MODES)
        if not self.project.strip():
            raise ConfigError(f"{path}.project must be a non-empty string (got {self.project!r})")
        if self.group is not None and not self.group.strip():
            raise ConfigError(f"{path}.group must be null or a non-empty string (got '')")


@dataclass
class Config:
    """The whole run configuration (``bamdp-train`` composes it with Hydra).

    Examples
    --------
    >>> config = Config()
    >>> config.reward_decoder, config.eval_stratified, config.num_finite_tasks
    ('grid_cells', True, 21)
    >>> robot = load_config({"env": {"name": "point_robot_sparse"}})
    >>> robot.reward_decoder, robot.eval_stratified, robot.num_finite_tasks
    ('mse', False, None)
    >>> try:
    ...     load_config({"env": {"num_envs": 5}})
    ... except ConfigError as err:
    ...     print(err)
    algo.ppo.minibatches (16) must divide the batch of env.num_envs x steps_per_batch = 300 frames
    """

    seed: int = 0
    device: str = "cpu"
    run_dir: str | None = None
    resume: str | None = None
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)

    def validate(self, path: str = "config") -> None:
        _at_least(path, "seed", self.seed, 0)
        if self.seed > MAX_SEED:
            raise ConfigError(f"{path}.seed must be <= 2**63 - 1 (got {self.seed})")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(
                f"{path}.device must be 'cpu', 'mps', 'cuda' or 'cuda:<index>' "
                f"(got {self.device!r})"
            )
        collectors = self.train.num_collectors
        if self.env.num_envs % collectors != 0:
            raise ConfigError(
                f"train.num_collectors ({collectors}) must divide env.num_envs "
                f"({self.env.num_envs}): every collector runs the same number of tasks"
            )
        if self.train.collector != "single" and self.env.workers:
            raise ConfigError(
                f"env.workers={self.env.workers} steps the training process's simulators in "
                f"worker processes; with train.collector={self.train.collector!r} every "
                "collector is a process of its own already: set env.workers=0 (or "
                "train.collector='single')"
            )
        if self.train.collector != "single" and self.device != "cpu":
            raise ConfigError(
                f"train.collector={self.train.collector!r} collects and trains on the CPU: "
                f"{path}.device must be 'cpu' (got {self.device!r}), or use "
                "train.collector='single'"
            )
        steps = self.train.steps_per_batch or self.env.horizon
        if steps % self.env.horizon != 0:
            raise ConfigError(
                f"train.steps_per_batch ({steps}) must be a multiple of the BAMDP horizon "
                f"env.episode_length x env.episodes_per_task = {self.env.horizon}, so that every "
                "batch holds whole tasks and beliefs never mix encoder versions"
            )
        family = self.env.family
        if (
            self.algo.name in VARIBAD_ALGOS
            and self.algo.decoders.reward == "grid_cells"
            and (family is None or family.reward_decoder != "grid_cells")
        ):
            raise ConfigError(
                "algo.decoders.reward='grid_cells' needs a task family that declares it "
                f"(reward_decoder='grid_cells': GridNavi; got env.name={self.env.name!r}); use "
                "'mse' for continuous rewards"
            )
        if self.algo.policy_belief not in ("auto", "latent") and (
            self.algo.name not in VARIBAD_ALGOS or self.reward_decoder != "grid_cells"
        ):
            raise ConfigError(
                f"algo.policy_belief={self.algo.policy_belief!r} decodes VariBAD's belief with "
                "the per-cell GridNavi reward decoder: it needs a VariBAD algorithm and "
                f"algo.decoders.reward='grid_cells' (got algo.name={self.algo.name!r}, reward "
                f"decoder {self.reward_decoder!r}); use 'latent' otherwise"
            )
        if self.env.observation == "pixels":
            self._validate_pixels()
        if self.algo.name in GRIDWORLD_ONLY_ALGOS and self.env.name != "gridworld":
            raise ConfigError(
                f"algo.name={self.algo.name!r} needs env.name='gridworld' (it computes the exact "
                f"posterior over GridNavi goal cells; got env.name={self.env.name!r})"
            )
        self._validate_switching()
        if self.algo.name in RL2_ALGOS and not self.algo.ppo.encoder_grad:
            raise ConfigError(
                f"algo.name={self.algo.name!r} trains its recurrent memory with the RL loss only: "
                "algo.ppo.encoder_grad must be true (got false)"
            )
        if self.algo.name == "rl2_original" and self.env.name not in RL2_ORIGINAL_ENVS:
            raise ConfigError(
                f"algo.name='rl2_original' is the official implementation's RL2 configuration, "
                f"transcribed for env.name in {list(RL2_ORIGINAL_ENVS)} only (got env.name="
                f"{self.env.name!r}); use algo=rl2 there"
            )
        if self.env.name == "gridworld" and self.train.figure_goal is not None:
            x, y = self.train.figure_goal
            n = self.env.grid_size
            if not (0 <= x < n and 0 <= y < n) or (x <= 1 and y <= 1):
                raise ConfigError(
                    f"train.figure_goal {self.train.figure_goal} is not a GridNavi goal: a cell "
                    f"[x, y] with 0 <= x, y < env.grid_size = {n}, not one of the four cells "
                    "next to the start ([0, 0], [0, 1], [1, 0], [1, 1])"
                )
        tasks = self.num_finite_tasks
        shipped = self.env.factory is None and self.env.name in ENV_NAMES
        # A family of your own says whether its task set is finite when it is built.
        if self.train.eval_stratified and tasks is None and shipped:
            raise ConfigError(
                f"train.eval_stratified=true needs a finite task set, but env.name="
                f"{self.env.name!r} samples tasks from a continuous distribution; set "
                "train.eval_stratified=null (auto) or false"
            )
        # A family by import path declares its task set when built: the Trainer checks it then.
        if self.eval_stratified and tasks is not None and self.train.eval_tasks % tasks != 0:
            of = (
                ""
                if self.env.train_tasks == ALL_TASKS
                else f" (env.train_tasks={self.env.train_tasks!r})"
            )
            raise ConfigError(
                f"train.eval_tasks ({self.train.eval_tasks}) must be a multiple of the {tasks} "
                f"tasks of env.name={self.env.name!r}{of} with stratified evaluation (every task "
                "is tested equally often), or set train.eval_stratified=false"
            )
        validation = self.train.validation_tasks
        if self.eval_stratified and tasks and validation is not None and validation % tasks:
            raise ConfigError(
                f"train.validation_tasks ({validation}) must be a multiple of the {tasks} "
                f"tasks of env.name={self.env.name!r} with stratified evaluation (every task "
                "is validated equally often), or set train.eval_stratified=false"
            )
        for name in self.env.test_tasks if self.eval_stratified else ():
            count = self.num_tasks_of(name)
            if count is not None and self.train.eval_tasks % count != 0:
                raise ConfigError(
                    f"train.eval_tasks ({self.train.eval_tasks}) must also be a multiple of the "
                    f"{count} tasks of env.test_tasks entry {name!r} (each test distribution is "
                    f"meta-tested on train.eval_tasks stratified tasks; e.g. "
                    f"{math.lcm(count, tasks or 1)}), or set train.eval_stratified=false"
                )
        frames_per_batch = self.frames_per_batch
        if frames_per_batch % self.algo.ppo.minibatches != 0:
            raise ConfigError(
                f"algo.ppo.minibatches ({self.algo.ppo.minibatches}) must divide the batch of "
                f"env.num_envs x steps_per_batch = {frames_per_batch} frames"
            )
        ppo = self.algo.ppo
        whole_tasks = ppo.encoder_grad and ppo.recurrent_minibatch == "tasks"
        if whole_tasks and self.env.num_envs % ppo.minibatches != 0:
            raise ConfigError(
                "with algo.ppo.encoder_grad=true and algo.ppo.recurrent_minibatch='tasks' PPO "
                "minibatches are whole trajectories: "
                f"algo.ppo.minibatches ({self.algo.ppo.minibatches}) must divide env.num_envs "
                f"({self.env.num_envs})"
            )

    def _validate_switching(self) -> None:
        """The algorithms and evaluation settings a task-switching BAMDP allows (or needs)."""
        hazard, algo = self.env.switching_hazard, self.algo.name
        if self.env.switching and algo in NOT_SWITCHING_ALGOS:
            raise ConfigError(
                f"algo.name={algo!r} plans for a task that never changes; it cannot act on a "
                f"switching BAMDP (env.switching_hazard={hazard}): set env.switching_hazard=0, or "
                "use algo=belief_oracle (PPO on the exact switching posterior)"
            )
        if algo in SWITCHING_ONLY_ALGOS and not self.env.switching:
            raise ConfigError(
                f"algo.name={algo!r} is VariBAD for tasks that switch within a rollout: it needs "
                "env.switching_hazard > 0 (e.g. env.switching_hazard=0.05 env.episode_length=200 "
                "env.episodes_per_task=1); on a fixed-task BAMDP use algo=varibad"
            )
        if algo in SWITCHING_ONLY_ALGOS and self.algo.ppo.critic_task:
            raise ConfigError(
                f"algo.name={algo!r} reads nothing privileged: algo.ppo.critic_task must be false "
                "(the critic would read the true task in force, which the switching env writes "
                "for oracles and evaluation only)"
            )
        elbo = self.algo.elbo
        own = [
            f"algo.elbo.{name}={getattr(elbo, name)}"
            for name in ("decode_window", "prior_hazard")
            if getattr(elbo, name) is not None
        ]
        if own and algo not in SWITCHING_ONLY_ALGOS:
            raise ConfigError(
                f"{own[0]} is an option of the switching ELBO (algo.name in "
                f"{list(SWITCHING_ONLY_ALGOS)}), not of algo.name={algo!r}: leave it null"
            )
        if algo in SWITCHING_ONLY_ALGOS and self.algo.decoders.task:
            raise ConfigError(
                f"algo.name={algo!r}: algo.decoders.task must be false (the task decoder reads "
                "the true task, privileged, which also changes along a switching rollout)"
            )
        if algo in SWITCHING_ONLY_ALGOS and elbo.subsample_mode != "rescaled":
            raise ConfigError(
                f"algo.name={algo!r} takes algo.elbo.subsample_mode='rescaled' only (got "
                f"{elbo.subsample_mode!r}, the original's sampling of its fixed-task ELBO)"
            )
        if self.env.switching and self.train.eval_episodes not in (None, 1):
            raise ConfigError(
                f"train.eval_episodes={self.train.eval_episodes}: a switching BAMDP is one rollout "
                "without inner episodes, meta-tested as one episode of env.episode_length steps; "
                "leave it null (or 1)"
            )

    def _validate_pixels(self) -> None:
        """What image observations rule out, each named with the field to change."""
        algo = self.algo
        if algo.builder is None and algo.name not in PIXEL_ALGOS:
            raise ConfigError(
                f"env.observation='pixels' needs an algorithm that embeds frames, algo.name in "
                f"{list(PIXEL_ALGOS)} (got algo.name={algo.name!r}: it reads the state as a "
                "vector); its returns on the state task are the reference, the task "
                "distribution is the same: run it with env.observation=state"
            )
        if algo.decoders.state:
            raise ConfigError(
                "algo.decoders.state=true would reconstruct the next frame pixel by pixel; with "
                "env.observation='pixels' the ELBO decodes rewards only (and the task, "
                "algo.decoders.task): set algo.decoders.state=false"
            )
        for name, value in (
            ("algo.encoder.done_input", algo.encoder.done_input),
            ("algo.decoders.done_input", algo.decoders.done_input),
            ("algo.ppo.done_input", algo.ppo.done_input),
            ("algo.ppo.input_embed", algo.ppo.input_embed),
        ):
            if value:
                raise ConfigError(
                    f"{name}={value!r} is an option of the original's state-vector networks; "
                    "with env.observation='pixels' the frame is embedded by algo.cnn: set it to "
                    f"{'0' if name.endswith('embed') else 'false'}"
                )
        trains_a_policy = algo.name not in ("random",)
        if (
            algo.cnn.policy == "shared"
            and trains_a_policy
            and algo.name != "varibad"
            and algo.builder is None
        ):
            raise ConfigError(
                "algo.cnn.policy='shared' gives the policy the belief encoder's CNN features, "
                f"but algo.name={algo.name!r} has no belief encoder: use algo.cnn.policy="
                "'separate'"
            )
        size = algo.cnn.output_size(self.env.image_size)
        if size < 1:
            raise ConfigError(
                f"algo.cnn: the convolutions (kernel_sizes {algo.cnn.kernel_sizes}, strides "
                f"{algo.cnn.strides}) leave nothing of env.image_size={self.env.image_size} "
                "frames: use fewer or smaller strides, or larger frames"
            )

    @property
    def num_finite_tasks(self) -> int | None:
        """Size of the env's (training) task set if it is finite (GridNavi goals, directions),
        else None, as its registration declares (``TaskFamily.finite_tasks``; ``None`` for a
        family by import path, whose env declares it when built: ``TaskEnv.task_support``)."""
        return self.num_tasks_of(self.env.train_tasks)

    def num_tasks_of(self, distribution: str) -> int | None:
        """Size of the finite task set of the env's task distribution ``distribution`` (a name
        the family declares), ``None`` when continuous or unknown before the env is built.

        Examples
        --------
        >>> config = load_config({})
        >>> config.num_tasks_of("heldout_train"), config.num_tasks_of("heldout_test")
        (16, 5)
        """
        family = self.env.family
        if family is None:
            return None
        return family.num_tasks({**dataclasses.asdict(self.env), "train_tasks": distribution})

    def has_figure(self, figure: str) -> bool:
        """Whether this run can draw a family-specific figure: declared by its task family
        (``TaskFamily.figures``) and, for ``belief_heatmap``, VariBAD with the per-cell decoder.

        Examples
        --------
        >>> load_config({}).has_figure("belief_heatmap")
        True
        >>> load_config({"algo": {"name": "rl2"}}).has_figure("belief_heatmap")
        False
        """
        family = self.env.family
        if family is None or figure not in family.figures:
            return False
        if figure == "belief_heatmap" and self.env.switching:
            return False  # the rollout figure is drawn on the fixed-task BAMDP
        if figure == "belief_heatmap":
            return self.algo.name in VARIBAD_ALGOS and self.reward_decoder == "grid_cells"
        return True

    @property
    def eval_stratified(self) -> bool:
        """Whether meta-tests cover every task equally often (``train.eval_stratified``;
        ``null`` = whenever the task set is finite)."""
        if self.train.eval_stratified is None:
            return self.num_finite_tasks is not None
        return self.train.eval_stratified

    @property
    def reward_decoder(self) -> str:
        """``algo.decoders.reward`` resolved: ``auto`` is the decoder the task family declares
        (``grid_cells`` for GridNavi, ``mse`` for the others and for a family by import
        path)."""
        reward = self.algo.decoders.reward
        if reward == "auto":
            family = self.env.family
            return "mse" if family is None else family.reward_decoder
        return reward

    @property
    def policy_belief(self) -> str:
        """``algo.policy_belief`` resolved: ``auto`` is ``decoded`` for VariBAD with the
        per-cell GridNavi reward decoder, else ``latent``.

        Examples
        --------
        >>> load_config({}).policy_belief
        'decoded'
        >>> load_config({"algo": {"decoders": {"reward": "mse"}}}).policy_belief
        'latent'
        """
        if self.algo.policy_belief != "auto":
            return self.algo.policy_belief
        grid_varibad = self.algo.name in VARIBAD_ALGOS and self.reward_decoder == "grid_cells"
        return "decoded" if grid_varibad else "latent"

    @property
    def steps_per_batch(self) -> int:
        return self.train.steps_per_batch or self.env.horizon

    @property
    def frames_per_batch(self) -> int:
        return self.env.num_envs * self.steps_per_batch


# -- validation helpers ------------------------------------------------------------------------
def module_available(name: str) -> bool:
    """Whether ``import name`` would find the module, without importing it.

    Examples
    --------
    >>> module_available("json"), module_available("no_such_module_here")
    (True, False)
    """
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or sys.modules[name] is None
        return False


def _unregistered(
    path: str, name: str, names: tuple[str, ...], what: str, path_field: str, register: str
) -> ConfigError:
    """The error for a ``<path>.name`` no registry knows: the closest name, the registered ones,
    and the two ways to bring one's own (an import path field, or the registry call)."""
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    article = "an" if what[0] in "aeiou" else "a"
    return ConfigError(
        f"{path}.name={name!r} is not a registered {what}{hint} (registered: {list(names)}); "
        f"for {article} {what} of your own set {path}.{path_field}='package.module:function' or "
        f"register it with torchrl_bamdp.{register}"
    )


def _choice(path: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}.{name} must be one of {list(allowed)} (got {value!r})")


def _at_least(path: str, name: str, value: float, low: float) -> None:
    if not value >= low:  # also rejects NaN
        raise ConfigError(f"{path}.{name} must be >= {low} (got {value})")


def _positive(path: str, name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{path}.{name} must be > 0 (got {value})")


def _in_open_unit(path: str, name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{path}.{name} must be in (0, 1) (got {value})")


def _convert(path: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (with int -> float promotion)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(path, arg, value)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping (got {value!r})")
        key_type, item = typing.get_args(tp)
        out = {}
        for key, item_value in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{path} keys must be strings (got {key!r})")
            out[key] = item_value if item is Any else _convert(f"{path}.{key}", item, item_value)
        return out
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list (got {value!r})")
        (item,) = typing.get_args(tp)
        return [_convert(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a number (got {value!r})")
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{path} must be a finite number (got {value!r})")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer (got {value!r})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false (got {value!r})")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string (got {value!r})")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must be a mapping (got {data!r})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{path}.{key}'{hint} (valid keys: {', '.join(sorted(names))})"
            )
        kwargs[key] = _convert(f"{path}.{key}", hints[key], value)
    return cls(**kwargs)


def _validate_tree(obj: Any, path: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            value.validate(f"{path}.{f.name}")
            _validate_tree(value, f"{path}.{f.name}")


def load_config(data: Mapping[str, Any] | None = None) -> Config:
    """Build and fully validate a :class:`Config` from a plain mapping (e.g. a Hydra config).

    The mapping is laid onto the composition ``bamdp-train`` makes for the algorithm and task
    family it names (``algo.name``, ``env.name``; GridNavi and varibad when absent), so Python
    and the command line agree on every default, per-family tuning included.

    Examples
    --------
    >>> cfg = load_config({"env": {"num_envs": 8}})
    >>> cfg.frames_per_batch
    480
    >>> load_config({"env": {"num_env": 8}})
    Traceback (most recent call last):
    ...
    torchrl_bamdp.configs.schema.ConfigError: unknown key 'config.env.num_env'; did you mean \
'num_envs'? (valid keys: bamdp_end, check_actions, episode_length, episodes_per_task, \
factory, grid_size, image_size, kwargs, name, num_envs, observation, split_seed, switching_hazard, \
sync_free, test_tasks, train_tasks, workers)
    """
    data = dict(data or {})
    # The same composition as `bamdp-train algo=<algo.name> env=<env.name>` (one source of
    # defaults: configs/compose.py), with the mapping on top.
    config = _build(Config, merge_onto(composed_defaults(data), data), "config")
    _validate_tree(config, "config")
    config.validate()
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict of a config (for saving and logging).

    Examples
    --------
    >>> config = load_config({"env": {"num_envs": 8}})
    >>> data = config_to_dict(config)
    >>> data["env"]["num_envs"], data["algo"]["ppo"]["lr"]
    (8, 0.001)
    >>> load_config(data) == config
    True
    """
    return dataclasses.asdict(config)


def dotted_leaves(value: Any, path: str = "") -> dict[str, Any]:
    """The leaves of a nested config dict as ``{"a.b.c": value}``, under ``path`` if given.

    Examples
    --------
    >>> dotted_leaves({"env": {"num_envs": 8, "kwargs": {}}, "seed": 0})
    {'env.num_envs': 8, 'seed': 0}
    >>> dotted_leaves({"latent_dim": 5}, "algo.encoder")
    {'algo.encoder.latent_dim': 5}
    >>> dotted_leaves(3, "seed")
    {'seed': 3}
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(dotted_leaves(item, f"{path}.{key}" if path else str(key)))
        return out
    return {path: value}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw ``config.json`` of a run directory, or a :class:`ConfigError` saying what is wrong.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = path.write_text("[1, 2]")
    >>> try:
    ...     read_config_file(path)
    ... except ConfigError as err:
    ...     print(str(err).split(" holds ")[1])
    a list, not a config mapping
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is unreadable or not JSON ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a config mapping")
    return data


def read_run_config(run_dir: str | Path, **train_overrides: Any) -> Config:
    """The validated config a run was trained with, with ``train.*`` entries replaced.

    Examples
    --------
    >>> import tempfile
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> _ = (run_dir / "config.json").write_text(json.dumps(config_to_dict(Config())))
    >>> read_run_config(run_dir, eval_tasks=42).train.eval_tasks
    42
    """
    data = read_config_file(Path(run_dir) / "config.json")
    train = data.setdefault("train", {})
    if isinstance(train, dict):  # otherwise load_config names the problem
        train.update(train_overrides)
    return load_config(data)
