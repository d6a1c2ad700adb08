"""Every algorithm of the toolkit as one :class:`Agent`: the transforms that make its hyper-state
and the policy that reads it (DESIGN.md §2: swapping an algorithm is swapping a transform).

=================  ==========================================  ===============================
``algo.name``      hyper-state transform                       policy / training
=================  ==========================================  ===============================
``varibad``        learned belief (GRU encoder, ELBO)          PPO on [s, mean, logvar]
``varibad_switch`` the same, switching-prior ELBO (switching    PPO on [s, mean, logvar]
  ``ing``          env only; ``SwitchingELBOLoss``)
``rl2``            RL2 memory (same GRU, trained by PPO)       PPO on [s, hidden], end to end
``oracle``         the true task                               PPO on [s, task]
``belief_oracle``  exact posterior over goal cells (GridNavi;   PPO on [s, posterior]
                   the HMM filter on a switching env)
``bayes_optimal``  exact posterior over goal cells (GridNavi)  exact DP policy, not trained
``random``         none                                        uniform actions, not trained
=================  ==========================================  ===============================

With ``algo.policy_belief`` decoded (the GridNavi default, ``auto``) VariBAD's policy reads
[s, decoded belief] (:class:`~torchrl_bamdp.transforms.DecodedBelief`) instead of the latent.
With ``algo.ppo.time_features`` every trained shipped agent's hyper-state ends with the time of
the task (:class:`~torchrl_bamdp.transforms.TimeAwareHyperState`), for the policy and the critic
(:func:`with_time_features`).

On image observations (``env.observation=pixels``; ``varibad``, ``oracle`` and ``random``) the
belief encoder embeds each frame with a CNN (``algo.cnn``) and ``hyper_state`` holds, in place
of the state, either the flattened frame, which a CNN of the policy's own embeds
(``algo.cnn.policy=separate``), or the encoder's CNN features of it (``shared``); see
:mod:`torchrl_bamdp.transforms.pixels`.

Each algorithm is a builder ``(config, env) -> Agent`` (``build_varibad``, ``build_rl2``, ...)
registered in :mod:`torchrl_bamdp.algorithms`, and :func:`build_agent` dispatches through that
registry: an algorithm of your own is registered by the same call
(:func:`~torchrl_bamdp.algorithms.register_algorithm`) or named by import path
(``algo.builder``), and is then built, trained, checkpointed and evaluated like these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.envs import TransformedEnv
from torchrl.envs.transforms import Compose, Transform
from torchrl.modules import ProbabilisticActor
from torchrl.objectives import LossModule

from torchrl_bamdp.algorithms import resolve_builder
from torchrl_bamdp.configs.schema import VARIBAD_ALGOS, Config, ConfigError
from torchrl_bamdp.envs import BAMDPEnv, candidate_goal_cells
from torchrl_bamdp.envs.pixels import image_shape
from torchrl_bamdp.modules import (
    BeliefEncoder,
    GridCellRewardDecoder,
    RewardDecoder,
    StateDecoder,
    TaskDecoder,
)
from torchrl_bamdp.modules.actor_critic import (
    SamplingPolicy,
    make_actor_critic,
    unique_parameters,
)
from torchrl_bamdp.modules.pixels import PixelEmbedding
from torchrl_bamdp.objectives import ELBOLoss, SwitchingELBOLoss
from torchrl_bamdp.policies import BayesOptimalPolicy, uniform_box_policy, uniform_random_policy
from torchrl_bamdp.task_distributions import ALL_TASKS, grid_goal_cells
from torchrl_bamdp.transforms import varibad_transforms
from torchrl_bamdp.transforms.belief import (
    BELIEF_DECODED,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    policy_belief_keys,
    reencode_hyper_state,
)
from torchrl_bamdp.transforms.exact_belief import ExactGridBelief, exact_belief_transforms
from torchrl_bamdp.transforms.oracle import oracle_transforms
from torchrl_bamdp.transforms.pixels import EncoderFrameFeatures, FlatPixels
from torchrl_bamdp.transforms.rl2 import rl2_transforms
from torchrl_bamdp.transforms.switching_belief import switching_belief_transforms
from torchrl_bamdp.transforms.time import TIME_FEATURES, TimeAwareHyperState, time_features

#: Algorithms that are trained with PPO (the others are fixed reference policies).
TRAINED_ALGORITHMS = (
    "varibad",
    "varibad_original",
    "varibad_switching",
    "rl2",
    "rl2_original",
    "oracle",
    "belief_oracle",
)
REFERENCE_ALGORITHMS = ("bayes_optimal", "random")
#: Prefixes of the trainer's own metrics (``elbo/loss_kl``, ``ppo/loss_objective``, ...): an
#: auxiliary loss's terms are logged as ``<its name>/<term>``, so these names are taken.
RESERVED_LOSS_NAMES = ("elbo", "ppo", "train", "eval", "health", "perf", "figures")


@dataclass
class Agent:
    """The parts of one BAMDP agent: hyper-state transforms, policy, and what trains them.

    Parameters
    ----------
    name : str
        The algorithm (``algo.name``).
    actor : callable
        The policy: a TensorDict module writing ``action`` (and ``action_log_prob`` if trained).
    critic : nn.Module or None
        The PPO value network; ``None`` for reference policies that are not trained.
    make_transforms : callable
        Returns a fresh transform (sharing this agent's modules) that builds the policy's input.
    encoder : BeliefEncoder or None
        VariBAD's belief encoder or RL2's recurrent memory.
    elbo_loss : ELBOLoss or None
        VariBAD's ELBO (owns the encoder and decoders).
    reencode : callable or None
        ``reencode(tasks)`` recomputes the hyper-state of ``[n, T]`` whole tasks with gradients,
        so that PPO trains the recurrent part too (RL2, or VariBAD with ``encoder_grad``).
    make_policy : callable or None
        ``make_policy(env)`` builds the policy for another env (e.g. a meta-test with more
        episodes per task): the Bayes-optimal policy plans for the env's horizon.
    aux_losses : dict of str to LossModule
        Auxiliary objectives of a trained agent, by name. Each is called like the ELBO, on a
        ``[batch_trajectories, H+]`` batch of whole tasks from the trajectory buffer (the
        entries of :data:`~torchrl_bamdp.data.trajectory_buffer.DEFAULT_TRAJECTORY_KEYS`), and
        returns a TensorDict of scalars whose ``loss_*`` entries (already weighted, TorchRL's
        convention) are minimised; every entry is logged as ``<name>/<entry>``. Their
        parameters join the ELBO's optimiser (the model step of ``algo.elbo``: its ``lr``,
        ``updates_per_iteration``, ``max_grad_norm``, ``precollect_frames``), one step on the
        sum of the ELBO's and the auxiliary terms: a parameter shared with the ELBO (the
        encoder) is then stepped once, with both gradients, not by two optimisers. They are
        checkpointed (entry ``aux_losses``). Names are words, not a trainer metric prefix
        (:data:`RESERVED_LOSS_NAMES`).

    Notes
    -----
    What a checkpoint holds of an agent: ``elbo_loss`` (or ``encoder``), ``actor``, ``critic``,
    ``aux_losses`` and ``transforms``, the state of the training env's hyper-state transforms
    (their parameters and buffers, minus what another entry holds already, e.g. VariBAD's
    encoder). ``make_transforms()`` is called once per env (training, each evaluation), so a
    state that every env must see, learnt or running, lives in a module the builder creates
    once and the transforms share, as VariBAD's belief shares its encoder with the ELBO. With
    ``train.collector`` process or ray the same contract carries the state to the collectors:
    each worker builds its own agent with the same builder, and after every update receives the
    acting policy and the state of ``modules()`` (but actor and critic) and of its transforms
    (:mod:`torchrl_bamdp.trainers.collection`); a state held anywhere else would stay stale there.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> agent = build_agent(load_config({"algo": {"name": "oracle"}}), make_env(num_envs=2))
    >>> agent.trains_policy, agent.elbo_loss is None
    (True, True)

    An auxiliary loss (here a weight penalty on the critic, weighted inside the loss):

    >>> from dataclasses import replace
    >>> from tensordict import TensorDict
    >>> class WeightPenalty(LossModule):
    ...     def __init__(self, critic, coef=1e-4):
    ...         super().__init__()
    ...         self.critic, self.coef = critic, coef
    ...     def forward(self, trajectories):
    ...         penalty = sum(p.pow(2).sum() for p in self.critic.parameters())
    ...         return TensorDict({"loss_l2": self.coef * penalty}, batch_size=[])
    >>> mine = replace(agent, name="my_oracle", aux_losses={"l2": WeightPenalty(agent.critic)})
    >>> sorted(mine.modules())
    ['actor', 'aux_losses', 'critic']
    """

    name: str
    actor: Any
    critic: nn.Module | None
    make_transforms: Callable[[], Transform]
    encoder: BeliefEncoder | None = None
    elbo_loss: ELBOLoss | None = None
    reencode: Callable[[TensorDictBase], torch.Tensor] | None = field(default=None, repr=False)
    make_policy: Callable[[BAMDPEnv], Any] | None = field(default=None, repr=False)
    aux_losses: dict[str, LossModule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, loss in self.aux_losses.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(
                    f"Agent {self.name!r}: aux_losses names must be words of letters, digits "
                    f"and '_' starting with a letter (they name metrics); got {name!r}"
                )
            if name in RESERVED_LOSS_NAMES:
                raise ValueError(
                    f"Agent {self.name!r}: aux_losses name {name!r} is taken by the trainer's "
                    f"own metrics ({', '.join(RESERVED_LOSS_NAMES)}); choose another"
                )
            if not isinstance(loss, nn.Module):
                raise TypeError(
                    f"Agent {self.name!r}: aux_losses[{name!r}] must be a LossModule (an "
                    f"nn.Module returning a TensorDict of loss_* terms); got {type(loss).__name__}"
                )

    @property
    def trains_policy(self) -> bool:
        """Whether PPO trains this agent's policy."""
        return self.critic is not None

    def transformed_env(self, env: BAMDPEnv) -> TransformedEnv:
        """``env`` with this agent's hyper-state transforms."""
        return TransformedEnv(env, self.make_transforms())

    @cached_property
    def acting_policy(self) -> Any:
        """What collects and meta-tests: a :class:`SamplingPolicy` of a PPO actor (actions
        only; the trainer adds the log-probabilities per batch), else the actor itself."""
        if isinstance(self.actor, ProbabilisticActor):
            return SamplingPolicy(self.actor)
        return self.actor

    def policy_for(self, env: BAMDPEnv) -> Any:
        """The policy to run in ``env`` (the trained actor, unless it depends on the horizon)."""
        return self.acting_policy if self.make_policy is None else self.make_policy(env)

    def modules(self) -> dict[str, nn.Module]:
        """The stateful parts this agent holds, by checkpoint entry.

        The transforms are not here: each env gets its own (:meth:`transformed_env`), and the
        trainer checkpoints those of its training env (entry ``transforms``).
        """
        parts: dict[str, nn.Module] = {}
        if self.elbo_loss is not None:
            parts["elbo_loss"] = self.elbo_loss
        elif self.encoder is not None:
            parts["encoder"] = self.encoder
        if isinstance(self.actor, nn.Module):
            parts["actor"] = self.actor
        if self.critic is not None:
            parts["critic"] = self.critic
        if self.aux_losses:
            parts["aux_losses"] = self._aux_module
        return parts

    @cached_property
    def _aux_module(self) -> nn.ModuleDict:
        # One container for the checkpoint entry and device moves (keys: the losses' names).
        return nn.ModuleDict(self.aux_losses)

    def policy_parameters(self) -> list[nn.Parameter]:
        """What the PPO optimiser updates: actor, critic and, when re-encoded, the encoder."""
        # Each once: actor and critic share their input embeddings (algo.ppo.input_embed).
        modules = [self.actor, self.critic]
        if self.reencode is not None and self.encoder is not None:
            modules.append(self.encoder)
        return unique_parameters(*modules)

    def to(self, device: torch.device) -> Agent:
        for module in self.modules().values():
            module.to(device)
        return self


def _action_dims(env: BAMDPEnv) -> tuple[int, bool]:
    spec = env.action_spec
    discrete = hasattr(spec, "n")
    return (spec.n if discrete else spec.shape[-1]), discrete


def _encoder(
    config: Config, obs_dim: int, env: BAMDPEnv, done_input: bool = False
) -> BeliefEncoder:
    enc = config.algo.encoder
    action_dim, discrete = _action_dims(env)
    frames = _frame_shape(env)
    return BeliefEncoder(
        obs_dim=obs_dim,
        action_dim=action_dim,
        discrete_actions=discrete,
        latent_dim=enc.latent_dim,
        hidden_size=enc.hidden_size,
        obs_embed=enc.obs_embed,
        action_embed=enc.action_embed,
        reward_embed=enc.reward_embed,
        done_input=done_input,
        # Frames: the state embedding is a CNN (algo.cnn) to obs_embed features.
        obs_net=None if frames is None else _cnn(config, frames, enc.obs_embed),
    )


def _frame_shape(env: BAMDPEnv) -> tuple[int, ...] | None:
    """``(C, H, W)`` when the env observes frames, else ``None`` (read from its spec)."""
    return image_shape(env.observation_spec["observation"].shape, env.batch_dims)


def _cnn(
    config: Config, frames: tuple[int, ...], features: int, flat: bool = False
) -> PixelEmbedding:
    """The ``algo.cnn`` embedding of frames of shape ``frames``: raw ``uint8`` frames (the
    encoder, the decoders), or flat ones scaled to [0, 1] (``flat``: in the hyper-state)."""
    cnn = config.algo.cnn
    return PixelEmbedding(
        frames,
        features,
        channels=cnn.channels,
        kernel_sizes=cnn.kernel_sizes,
        strides=cnn.strides,
        input_scale=1.0 if flat else 1.0 / 255.0,
        flat_input=flat,
    )


def _policy_observation(
    config: Config, env: BAMDPEnv, encoder: BeliefEncoder | None = None
) -> tuple[Callable[[], Transform] | None, int, tuple[int, ...] | None]:
    """What ``hyper_state`` holds of the observation: ``(make_transform, size, frame_shape)``.

    A state vector: itself (no transform, ``frame_shape`` ``None``). A frame, by
    ``algo.cnn.policy``: ``separate``, the frame flattened (:class:`FlatPixels`), which the
    policy's own CNN embeds (``frame_shape`` is its shape); ``shared``, the encoder's CNN
    features of it (:class:`EncoderFrameFeatures`, a plain vector to the policy).
    """
    frames = _frame_shape(env)
    if frames is None:
        return None, _obs_dim(env), None
    if config.algo.cnn.policy == "shared":
        if encoder is None:
            raise ConfigError("algo.cnn.policy='shared' needs an agent with a belief encoder")
        return (lambda: EncoderFrameFeatures(encoder)), config.algo.encoder.obs_embed, None
    return FlatPixels, _obs_dim(env), frames


def _actor_critic(
    config: Config,
    env: BAMDPEnv,
    state_dim: int,
    belief_dim: int,
    frame_shape: tuple[int, ...] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """PPO actor and critic on ``hyper_state = [state (state_dim), belief (belief_dim), time]``.

    With ``algo.ppo.input_embed`` the state part and the belief part are each embedded first
    (the original's policy), the time features passed through as they are. With
    ``frame_shape`` the state part is a flattened frame in ``[0, 1]``: the policy's own CNN
    (``algo.cnn``, one for actor and critic) embeds it, the rest passes through, and the input
    normaliser leaves the pixels as they are.
    """
    ppo = config.algo.ppo
    # A privileged critic also reads the true task (training only; the actor never sees it).
    critic_extra = {"task": env.observation_spec["task"].shape[-1]} if ppo.critic_task else None
    times = TIME_FEATURES if ppo.time_features else 0
    embeddings = None
    raw_dims = 0
    if frame_shape is not None:
        embeddings = {"frame": _cnn(config, frame_shape, config.algo.cnn.features, flat=True)}
        if belief_dim + times:
            embeddings["rest"] = (belief_dim + times, 0)
        raw_dims = state_dim
    elif ppo.input_embed:
        embeddings = {"state": (state_dim, ppo.input_embed)}
        if belief_dim:
            embeddings["belief"] = (belief_dim, ppo.input_embed)
        if times:
            embeddings["time"] = (times, 0)
    return make_actor_critic(
        state_dim + belief_dim + times,
        env.action_spec,
        ppo.hidden,
        ppo.activation,
        normalize_input=ppo.normalize_input,
        critic_extra=critic_extra,
        continuous_dist=ppo.policy_dist,
        init_std=ppo.init_std,
        input_embeddings=embeddings,
        raw_input_dims=raw_dims,
    )


def _obs_dim(env: BAMDPEnv) -> int:
    # The size of one observation: a vector's length, or a frame's C * H * W.
    return env.observation_spec["observation"].shape[env.batch_dims :].numel()


def build_varibad(config: Config, env: BAMDPEnv) -> Agent:
    """VariBAD (``algo.name`` ``varibad`` or ``varibad_original``): the learned belief of a GRU
    encoder trained by the ELBO, PPO on the policy's view of it.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> agent = build_varibad(load_config({}), make_env(num_envs=2))
    >>> agent.name, agent.elbo_loss is not None
    ('varibad', True)
    """
    return with_time_features(_varibad(config, env, _obs_dim(env)), config)


def build_rl2(config: Config, env: BAMDPEnv) -> Agent:
    """RL2: a GRU memory over (action, reward, observation, done) trained end to end by PPO.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> config = load_config({"algo": {"name": "rl2", "ppo": {"encoder_grad": True}}})
    >>> build_rl2(config, make_env(num_envs=2)).reencode is not None
    True
    """
    return with_time_features(_rl2(config, env, _obs_dim(env)), config)


def build_oracle(config: Config, env: BAMDPEnv) -> Agent:
    """The oracle: PPO on [observation, true task] (the upper reference).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> build_oracle(load_config({"algo": {"name": "oracle"}}), make_env(num_envs=2)).name
    'oracle'
    """
    task_dim = env.observation_spec["task"].shape[-1]
    make_observation, obs_dim, frames = _policy_observation(config, env)
    actor, critic = _actor_critic(config, env, obs_dim, task_dim, frame_shape=frames)

    def make_transforms() -> Transform:
        return oracle_transforms(observation=make_observation() if make_observation else None)

    return with_time_features(Agent("oracle", actor, critic, make_transforms), config)


def build_belief_oracle(config: Config, env: BAMDPEnv) -> Agent:
    """The belief oracle (GridNavi): PPO on [observation, exact posterior over goal cells].

    On a task-switching env (``env.switching_hazard > 0``) the exact posterior is the switching
    prior's HMM filter (:class:`~torchrl_bamdp.transforms.SwitchingGridBelief`): the belief over
    the goal in force now, mixed back toward the prior at the hazard every step.

    Its posterior is under the prior of its *training* tasks (``env.train_tasks``), in every
    env it acts in: a belief oracle is the policy trained on the exact posterior of the task
    distribution it was trained on. Meta-tested on another distribution (``env.test_tasks``)
    it keeps that prior; trained on a subset of the goals, its posterior falls back to every
    candidate goal once the rewards rule out all the trained ones (``fallback`` of
    :class:`~torchrl_bamdp.transforms.ExactGridBelief`: the limit of a prior with an
    infinitesimal weight on the other goals). The agent that knows the test prior is the
    Bayes-optimal one (``bayes_optimal``, whose belief is the env's own).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> config = load_config({"algo": {"name": "belief_oracle"}})
    >>> build_belief_oracle(config, make_env(num_envs=2)).trains_policy
    True
    >>> config = load_config({"algo": {"name": "belief_oracle"}, "train": {"eval_tasks": 80},
    ...                       "env": {"train_tasks": "heldout_train"}})
    >>> agent = build_belief_oracle(config, make_env(num_envs=2, tasks="heldout_train"))
    >>> test_env = agent.transformed_env(make_env(num_envs=2, tasks="heldout_test"))
    >>> int((test_env.reset()["belief", "probs"][0] > 0).sum())  # the 16 training goals
    16
    """
    env_cfg = config.env
    grid = env_cfg.grid_size
    actor, critic = _actor_critic(config, env, _obs_dim(env), grid * grid)
    goals = torch.tensor(grid_goal_cells(grid, env_cfg.train_tasks, env_cfg.split_seed))
    # Trained on every goal: no other goal can appear, and the transforms stay as they were.
    fallback = None if env_cfg.train_tasks == ALL_TASKS else candidate_goal_cells(grid)

    hazard = env_cfg.switching_hazard

    def make_transforms() -> Compose:
        if hazard > 0:
            # The HMM filter of the switching prior (the schema allows no OOD split there, so
            # the training goals are the only ones the redraws can bring).
            return switching_belief_transforms(hazard, grid, candidates=goals)
        return exact_belief_transforms(grid, candidates=goals, fallback=fallback)

    agent = Agent("belief_oracle", actor, critic, make_transforms)
    return with_time_features(agent, config)


def build_bayes_optimal(config: Config, env: BAMDPEnv) -> Agent:
    """The exact Bayes-optimal GridNavi policy on the exact posterior (not trained).

    It knows the prior of whatever env it acts in (its belief's prior is that env's task
    distribution, and it plans for that env's horizon): on a test distribution it is the
    reference an agent trained elsewhere is compared with.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> config = load_config({"algo": {"name": "bayes_optimal"}})
    >>> build_bayes_optimal(config, make_env(num_envs=2)).trains_policy
    False
    """
    grid = config.env.grid_size
    return Agent(
        "bayes_optimal",
        BayesOptimalPolicy.from_env(env),
        None,
        lambda: Compose(ExactGridBelief(grid)),
        make_policy=BayesOptimalPolicy.from_env,
    )


def build_random(config: Config, env: BAMDPEnv) -> Agent:
    """Uniformly random actions, seeded by ``config.seed`` (not trained): uniform over the
    discrete actions, or uniform in the action box of a continuous-action env (MuJoCo).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> build_random(load_config({"algo": {"name": "random"}}), make_env(num_envs=2)).critic
    """
    num_actions, discrete = _action_dims(env)
    if discrete:
        policy = uniform_random_policy(num_actions, seed=config.seed)
    else:  # one env's bounds: the spec is batched over the envs
        space = env.action_spec.space
        low = space.low.reshape(-1, num_actions)[0]
        high = space.high.reshape(-1, num_actions)[0]
        policy = uniform_box_policy(low, high, seed=config.seed)
    return Agent("random", policy, None, Compose)


def _varibad(config: Config, env: BAMDPEnv, obs_dim: int) -> Agent:
    algo, env_cfg = config.algo, config.env
    encoder = _encoder(config, obs_dim, env, done_input=algo.encoder.done_input)
    action_dim, discrete = _action_dims(env)
    latent, dec, elbo = algo.encoder.latent_dim, algo.decoders, algo.elbo
    mse = elbo.mse_reduction
    reward_decoder = None
    frames = _frame_shape(env)
    if config.reward_decoder == "grid_cells":
        cells_of = None
        if frames is not None:
            # Which cell a frame shows: the renderer's exact inverse (no learnt part).
            cells_of = getattr(env.task_env, "frame_cells", None)
            if cells_of is None:
                raise ConfigError(
                    "algo.decoders.reward='grid_cells' on frames needs the task env's "
                    f"frame_cells (GridNaviEnv's); {type(env.task_env).__name__} has none"
                )
        reward_decoder = GridCellRewardDecoder(
            latent, env_cfg.grid_size, hidden=dec.reward_hidden, cells_of=cells_of
        )
    elif config.reward_decoder == "mse":
        reward_decoder = RewardDecoder(
            latent,
            obs_dim,
            action_dim,
            dec.reward_hidden,
            discrete_actions=discrete,
            mse_reduction=mse,
            obs_embed=dec.reward_obs_embed,
            action_embed=dec.reward_action_embed,
            done_input=dec.done_input,
            obs_net=None
            if frames is None
            else _cnn(config, frames, dec.reward_obs_embed or algo.cnn.features),
        )
    state_decoder = (
        StateDecoder(
            latent,
            obs_dim,
            action_dim,
            dec.state_hidden,
            discrete,
            mse_reduction=mse,
            obs_embed=dec.state_obs_embed,
            action_embed=dec.state_action_embed,
            done_input=dec.done_input,
        )
        if dec.state
        else None
    )
    task_dim = env.observation_spec["task"].shape[-1]
    task_decoder = (
        TaskDecoder(latent, task_dim, dec.task_hidden, mse_reduction=mse) if dec.task else None
    )
    options = {
        "reward_decoder": reward_decoder,
        "state_decoder": state_decoder,
        "elbo_subsample": elbo.elbo_subsample,
        "decode_subsample": elbo.decode_subsample,
        "kl_reduction": elbo.kl_reduction,
        "subsample_mode": elbo.subsample_mode,
        "tbptt_steps": elbo.tbptt_steps,
        "reward_weight": elbo.reward_weight,
        "state_weight": elbo.state_weight,
        "kl_weight": elbo.kl_weight,
    }
    if algo.name == "varibad_switching":
        # The switching prior's ELBO (no task decoder: the schema refuses it). Its hazard is
        # the env's unless algo.elbo.prior_hazard says otherwise.
        hazard = env_cfg.switching_hazard if elbo.prior_hazard is None else elbo.prior_hazard
        elbo_loss: ELBOLoss = SwitchingELBOLoss(
            encoder, hazard=hazard, decode_window=elbo.decode_window, **options
        )
    else:
        elbo_loss = ELBOLoss(
            encoder,
            task_decoder=task_decoder,
            task_reduction=elbo.task_reduction,
            task_weight=elbo.task_weight,
            **options,
        )
    policy_belief = config.policy_belief
    belief_keys = policy_belief_keys(policy_belief)
    cells = getattr(reward_decoder, "grid_size", 0) ** 2  # the decoded belief's size, if any
    sizes = {BELIEF_MEAN: latent, BELIEF_LOGVAR: latent, BELIEF_DECODED: cells}
    done_input = algo.ppo.done_input
    make_observation, state_dim, frame_shape = _policy_observation(config, env, encoder)
    actor, critic = _actor_critic(
        config,
        env,
        state_dim + int(done_input),
        sum(sizes[k] for k in belief_keys),
        frame_shape=frame_shape,
    )

    def make_transforms() -> Compose:
        return varibad_transforms(
            encoder,
            reward_decoder,
            policy_belief,
            done_input,
            tbptt_steps=elbo.tbptt_steps,
            observation=make_observation() if make_observation else None,
        )

    return Agent(
        algo.name,
        actor,
        critic,
        make_transforms,
        encoder=encoder,
        elbo_loss=elbo_loss,
        reencode=reencoder(make_transforms) if algo.ppo.encoder_grad else None,
    )


def _rl2(config: Config, env: BAMDPEnv, obs_dim: int) -> Agent:
    # The GRU also reads the inner-episode done flag, appended to the observation.
    algo = config.algo
    encoder = _encoder(config, obs_dim + 1, env)
    memory = algo.rl2_memory
    memory_dim = encoder.hidden_size if memory == "hidden" else 2 * encoder.latent_dim
    state_dim = obs_dim if algo.policy_state else 0
    actor, critic = _actor_critic(config, env, state_dim, memory_dim)

    def make_transforms() -> Compose:
        return rl2_transforms(encoder, memory, observation=algo.policy_state)

    return Agent(
        algo.name,
        actor,
        critic,
        make_transforms,
        encoder=encoder,
        reencode=reencoder(make_transforms),
    )


def with_time_features(agent: Agent, config: Config) -> Agent:
    """``agent`` with :class:`TimeAwareHyperState` after its hyper-state transforms, when it is
    trained and ``config.algo.ppo.time_features`` is set (else ``agent`` itself).

    The shipped builders size their networks for it and call it last; a builder of your own
    may do the same (networks on ``hyper_state`` of ``TIME_FEATURES`` more inputs) or not.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> env = make_env(num_envs=2)
    >>> agent = build_oracle(load_config({"algo": {"name": "oracle"}}), env)
    >>> agent.transformed_env(env).observation_spec["hyper_state"].shape  # s, task, time
    torch.Size([2, 6])
    """
    if not (agent.trains_policy and config.algo.ppo.time_features):
        return agent
    length, episodes = config.env.episode_length, config.env.episodes_per_task
    make_transforms = agent.make_transforms
    reencode = agent.reencode

    def make_time_aware_transforms() -> Transform:
        # Flat, not nested: a Compose inside a Compose breaks TorchRL's parent lookup.
        inner = make_transforms()
        parts = list(inner) if isinstance(inner, Compose) else [inner]
        return Compose(*parts, TimeAwareHyperState(length, episodes))

    def reencode_time_aware(tasks: TensorDictBase) -> torch.Tensor:
        # A re-encoding of your own (not made by `reencoder`): the time features appended.
        hyper_state = reencode(tasks)
        times = time_features(tasks["step_in_episode"], tasks["episode"], length, episodes)
        return torch.cat([hyper_state, times.to(hyper_state)], dim=-1)

    if reencode is None:
        new_reencode = None
    elif getattr(reencode, "from_transforms", False):
        new_reencode = reencoder(make_time_aware_transforms)
    else:
        new_reencode = reencode_time_aware
    return replace(agent, make_transforms=make_time_aware_transforms, reencode=new_reencode)


def reencoder(make_transforms: Callable[[], Transform]) -> Callable[[TensorDictBase], torch.Tensor]:
    """``Agent.reencode`` made from the agent's own hyper-state transforms: PPO's re-encoding of
    stored whole tasks runs the very transforms that built the hyper-state online
    (:func:`~torchrl_bamdp.transforms.belief.reencode_hyper_state`), so the hyper-state has one
    definition.

    Examples
    --------
    >>> from torchrl_bamdp.modules import BeliefEncoder
    >>> encoder = BeliefEncoder(obs_dim=3, action_dim=5, discrete_actions=True)
    >>> reencode = reencoder(lambda: rl2_transforms(encoder))
    >>> reencode.from_transforms
    True
    """
    transform = make_transforms()

    def reencode(tasks: TensorDictBase) -> torch.Tensor:
        return reencode_hyper_state(transform, tasks)

    reencode.from_transforms = True  # type: ignore[attr-defined]
    return reencode


def check_config_against_env(config: Config, env: BAMDPEnv) -> None:
    """Refuse a config that does not describe ``env``, naming the field and both values.

    The agent is sized from the env (observation, action and task dims), but what the config
    says about the env must hold too: the BAMDP horizon (the time features and the trajectory
    buffer are laid out by it) and, for the per-cell reward decoder and the exact GridNavi
    belief, that the task env is a GridNavi grid of ``env.grid_size``.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> env = make_env(num_envs=2, episodes_per_task=2)
    >>> try:
    ...     check_config_against_env(load_config({}), env)
    ... except ConfigError as err:
    ...     print(str(err).split(";")[0])
    config.env.episodes_per_task=4 but the env has 2 inner episodes per task
    """
    for name, what in (
        ("episode_length", "steps per inner episode"),
        ("episodes_per_task", "inner episodes per task"),
    ):
        have = getattr(env, name, None)
        if have is None:
            raise ConfigError(
                f"build_agent needs a BAMDPEnv (with {name}); got a {type(env).__name__}"
            )
        want = getattr(config.env, name)
        if have != want:
            raise ConfigError(
                f"config.env.{name}={want} but the env has {have} {what}; build the env from "
                "the config (make_env_from_config) or set the field to the env's value"
            )
    hazard = float(getattr(env, "hazard", 0.0))
    if hazard != config.env.switching_hazard:
        raise ConfigError(
            f"config.env.switching_hazard={config.env.switching_hazard} but the env's task "
            f"switches with hazard {hazard} ({type(env).__name__}); build the env from the config "
            "(make_env_from_config) or set the field to the env's value"
        )
    grid = getattr(env.task_env, "grid_size", None)
    needs_grid = []
    if config.algo.name in VARIBAD_ALGOS and config.reward_decoder == "grid_cells":
        needs_grid.append("algo.decoders.reward='grid_cells' (auto on GridNavi)")
    if config.algo.name in ("belief_oracle", "bayes_optimal"):
        needs_grid.append(f"algo.name={config.algo.name!r}")
    if needs_grid and grid != config.env.grid_size:
        raise ConfigError(
            f"{needs_grid[0]} needs a GridNavi task env of config.env.grid_size="
            f"{config.env.grid_size}; this env's task env is a {type(env.task_env).__name__}"
            + (f" of grid_size={grid}" if grid is not None else "")
            + "; use algo.decoders.reward=mse for another task family"
        )
    if config.eval_stratified:
        # A family by import path declares its task set only when built (TaskEnv.task_support).
        support = env.task_env.task_support()
        if support is None:
            raise ConfigError(
                f"train.eval_stratified=true needs a finite task set, but the task env "
                f"{type(env.task_env).__name__} of env.name={config.env.name!r} declares none "
                "(its task_support() returns None); set train.eval_stratified=null or false"
            )
        if config.train.eval_tasks % len(support) != 0:
            raise ConfigError(
                f"train.eval_tasks ({config.train.eval_tasks}) must be a multiple of the "
                f"{len(support)} tasks of env.name={config.env.name!r} with stratified "
                "evaluation (every task is tested equally often), or set "
                "train.eval_stratified=false"
            )


def build_agent(config: Config, env: BAMDPEnv) -> Agent:
    """Build the agent ``config.algo`` selects for ``env`` (an untransformed BAMDP env).

    The builder is ``algo.builder`` when set (an import path), else the one registered as
    ``algo.name`` (:mod:`torchrl_bamdp.algorithms`; the shipped algorithms are registered
    there too). The config is first checked against the env (:func:`check_config_against_env`).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> env = make_env(num_envs=2)
    >>> rl2 = load_config({"algo": {"name": "rl2", "ppo": {"encoder_grad": True}}})
    >>> build_agent(rl2, env).trains_policy
    True
    >>> build_agent(load_config({"algo": {"name": "bayes_optimal"}}), env).trains_policy
    False
    >>> mine = {"name": "my_oracle", "builder": "torchrl_bamdp.trainers.agents:build_oracle"}
    >>> build_agent(load_config({"algo": mine}), env).name
    'oracle'
    """
    check_config_against_env(config, env)
    algo = config.algo
    try:
        builder = resolve_builder(algo.name, algo.builder)
    except ValueError as err:  # e.g. algo.builder's module is not importable in this process
        raise ConfigError(f"config.{err}") from None
    agent = builder(config, env)
    if not isinstance(agent, Agent):
        where = f"algo.builder={algo.builder!r}" if algo.builder else f"algo.name={algo.name!r}"
        raise TypeError(
            f"the builder of {where} returned a {type(agent).__name__}, not a "
            "torchrl_bamdp.trainers.Agent"
        )
    return agent
