"""VariBAD's learned belief, maintained online as a TorchRL transform (DESIGN.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import CatTensors, Compose, DTypeCastTransform, Transform

from torchrl_bamdp.envs.bamdp import TRUE_OBSERVATION
from torchrl_bamdp.modules.encoder import BeliefEncoder

BELIEF_MEAN: tuple[str, str] = ("belief", "mean")
BELIEF_LOGVAR: tuple[str, str] = ("belief", "logvar")
BELIEF_HIDDEN: tuple[str, str] = ("belief", "hidden")
#: The learned belief decoded into per-cell goal probabilities (:class:`DecodedBelief`).
BELIEF_DECODED: tuple[str, str] = ("belief", "decoded")


class SharedEncoderTransform(Transform):
    """A transform that runs an encoder whose training a loss owns (``self.encoder``).

    A ``TransformedEnv`` puts every transform it takes in eval mode. Passed on to the encoder,
    that would also put the ELBO's (or RL2's PPO) encoder in eval mode, and cuDNN refuses the
    backward pass of a recurrent layer in eval mode (``cudnn RNN backward can only be called in
    training mode``): VariBAD and RL2 could not train on a GPU. So ``train``/``eval`` set the
    mode of this transform and of its other children, never the shared encoder's.

    Examples
    --------
    >>> from torchrl_bamdp.modules import BeliefEncoder
    >>> encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    >>> belief = VariationalBelief(encoder).eval()
    >>> belief.training, encoder.training
    (False, True)
    """

    encoder: nn.Module

    def train(self, mode: bool = True) -> SharedEncoderTransform:
        self.training = mode
        for child in self.children():
            if child is not self.encoder:
                child.train(mode)
        return self


class VariationalBelief(SharedEncoderTransform):
    """Carry the VariBAD posterior q(m | tau_:t) in the tensordict, one GRU step per env step.

    On reset (a new task) it writes the prior N(0, I) and a zero hidden state; on every step it
    reads the action taken, the reward and the state the step landed in and writes the updated
    ``("belief", "mean" | "logvar" | "hidden")`` into the next tensordict. That state is
    ``("next", "true_observation")`` (:data:`~torchrl_bamdp.envs.bamdp.TRUE_OBSERVATION`), not
    ``("next", "observation")``: at an inner-episode end the latter is already the start state
    of the next episode, and a goal reached on the last step would be encoded at the start cell.
    Inner-episode resets are not TorchRL resets, so the belief persists across the inner
    episodes of a task. The encoder is the very module the ELBO loss trains, so collection
    always uses the latest weights.

    Parameters
    ----------
    encoder : BeliefEncoder
        The shared encoder.
    action_key, reward_key, observation_key : NestedKey
        Where to read a_t (root tensordict), r_{t+1} and the true s_{t+1} (next tensordict;
        ``observation_key`` defaults to ``"true_observation"``, written by
        :class:`~torchrl_bamdp.envs.BAMDPEnv`).
    track_gradients : bool
        If ``False`` (default) the update runs under ``torch.no_grad()``: collection never builds
        a graph through time, and PPO trains on the stored belief.
    done_key : NestedKey
        Where to read the inner-episode-done flag d_{t+1} (next tensordict; default
        ``"episode_done"``, written by :class:`~torchrl_bamdp.envs.BAMDPEnv`). Read only when
        the encoder has ``done_input=True`` (the original's ``add_done_info``); the ELBO loss
        re-encodes stored trajectories from the same entry (``("next", "episode_done")``).

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
    >>> base = BAMDPEnv(GridNaviEnv(num_envs=4), episode_length=15, episodes_per_task=4)
    >>> encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    >>> env = TransformedEnv(base, VariationalBelief(encoder))
    >>> td = env.rand_step(env.reset())
    >>> td["next", "belief", "mean"].shape
    torch.Size([4, 5])
    """

    def __init__(
        self,
        encoder: BeliefEncoder,
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        observation_key: NestedKey = TRUE_OBSERVATION,
        track_gradients: bool = False,
        done_key: NestedKey = "episode_done",
        tbptt_steps: int | None = None,
    ) -> None:
        self.reads_done = bool(getattr(encoder, "done_input", False))
        super().__init__(
            in_keys=[action_key, reward_key, observation_key, *([done_key] * self.reads_done)],
            out_keys=[BELIEF_MEAN, BELIEF_LOGVAR, BELIEF_HIDDEN],
        )
        self.encoder = encoder
        self.action_key = action_key
        self.reward_key = reward_key
        self.observation_key = observation_key
        self.done_key = done_key
        self.track_gradients = track_gradients
        self.tbptt_steps = tbptt_steps

    def write_sequence(self, trajectories: TensorDictBase) -> TensorDictBase:
        """Write the belief *before* every step of ``[N, T]`` whole stored tasks, with gradients:
        the same inputs as online (so the same values for the same weights), in one pass of
        the GRU (truncated every ``tbptt_steps`` steps when set). Used by
        :func:`reencode_hyper_state`."""
        nxt = trajectories.get("next")
        mean, logvar, _ = self.encoder.sequence(
            trajectories.get(self.action_key),
            nxt.get(self.reward_key),
            nxt.get(self.observation_key),
            done=nxt.get(self.done_key) if self.reads_done else None,
            detach_every=self.tbptt_steps,
        )
        trajectories.set(BELIEF_MEAN, mean[:, :-1])
        trajectories.set(BELIEF_LOGVAR, logvar[:, :-1])
        return trajectories

    def _prior(self, tensordict_reset: TensorDictBase) -> TensorDictBase:
        batch = tensordict_reset.batch_size
        device = tensordict_reset.device
        mean, logvar = self.encoder.prior(*batch, device=device)
        tensordict_reset.set(BELIEF_MEAN, mean)
        tensordict_reset.set(BELIEF_LOGVAR, logvar)
        tensordict_reset.set(BELIEF_HIDDEN, self.encoder.initial_hidden(*batch, device=device))
        return tensordict_reset

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        # A full-batch prior is written; on partial resets EnvBase.reset keeps the belief of the
        # envs that were not reset (it merges with the "_reset" mask).
        return self._prior(tensordict_reset)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        hidden = tensordict.get(BELIEF_HIDDEN, None)
        if hidden is None:
            raise KeyError(
                f"{type(self).__name__}: no {BELIEF_HIDDEN} in the input tensordict; step from a "
                "tensordict returned by env.reset() (or a collector), not a hand-made one."
            )
        inputs = []
        sources = [
            (tensordict, self.action_key),
            (next_tensordict, self.reward_key),
            (next_tensordict, self.observation_key),
        ]
        if self.reads_done:
            sources.append((next_tensordict, self.done_key))
        for source, key in sources:
            value = source.get(key, None)
            if value is None:
                hint = (
                    " (BAMDPEnv writes it: wrap the task env in a BAMDPEnv, or pass "
                    "observation_key='observation' for an env without inner-episode resets)"
                    if key == self.observation_key
                    else " (BAMDPEnv writes it; the encoder has done_input=True)"
                    if self.reads_done and key == self.done_key
                    else ""
                )
                raise KeyError(
                    f"{type(self).__name__}: no entry {key!r} to update the belief from{hint}"
                )
            inputs.append(value)
        with torch.set_grad_enabled(self.track_gradients and torch.is_grad_enabled()):
            if self.reads_done:
                action, reward, obs, done = inputs
                mean, logvar, hidden = self.encoder.step(action, reward, obs, hidden, done=done)
            else:
                mean, logvar, hidden = self.encoder.step(*inputs, hidden)
        next_tensordict.set(BELIEF_MEAN, mean)
        next_tensordict.set(BELIEF_LOGVAR, logvar)
        next_tensordict.set(BELIEF_HIDDEN, hidden)
        return next_tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise NotImplementedError(
            f"{type(self).__name__} is an environment transform: it needs (action, next reward, "
            "next observation) pairs. Use BeliefEncoder.sequence to re-encode stored trajectories."
        )

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        batch = self.parent.batch_size
        device = observation_spec.device
        latent, hidden = self.encoder.latent_dim, self.encoder.hidden_size
        observation_spec[BELIEF_MEAN] = Unbounded(shape=(*batch, latent), device=device)
        observation_spec[BELIEF_LOGVAR] = Unbounded(shape=(*batch, latent), device=device)
        observation_spec[BELIEF_HIDDEN] = Unbounded(shape=(*batch, hidden), device=device)
        return observation_spec


class DecodedBelief(Transform):
    """Decode the belief's mean into what it says about the task, as a policy input.

    The latent space of the encoder is only defined up to what the decoder makes of it: while
    the ELBO trains, the same posterior can move to other latent coordinates, and a policy
    reading ``(mean, logvar)`` sees its input drift. The decoder's output keeps its meaning:
    with the GridNavi per-cell head it is the probability that the goal is in each cell (the
    heatmap of the belief rollouts), which is what the exact belief oracle gives its policy.
    Writes ``("belief", "decoded")`` = ``decoder.probabilities(mean)`` after every belief update
    and on reset, without gradients (the ELBO alone trains the decoder).

    Parameters
    ----------
    decoder : nn.Module
        A decoder with ``probabilities(latent) -> [..., n]`` and ``grid_size`` (n =
        ``grid_size ** 2``), e.g. :class:`~torchrl_bamdp.modules.GridCellRewardDecoder`; the
        very module the ELBO trains.
    mean_key, out_key : NestedKey
        The belief mean to decode and where to write the decoded belief.

    Examples
    --------
    >>> from torchrl.envs import Compose, TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> from torchrl_bamdp.modules import GridCellRewardDecoder
    >>> encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    >>> decoder = GridCellRewardDecoder(latent_dim=5, grid_size=5)
    >>> env = TransformedEnv(
    ...     make_env(num_envs=3), Compose(VariationalBelief(encoder), DecodedBelief(decoder))
    ... )
    >>> env.rand_step(env.reset())["next", "belief", "decoded"].shape
    torch.Size([3, 25])
    """

    def __init__(
        self,
        decoder: nn.Module,
        mean_key: NestedKey = BELIEF_MEAN,
        out_key: NestedKey = BELIEF_DECODED,
    ) -> None:
        if not hasattr(decoder, "probabilities") or not hasattr(decoder, "grid_size"):
            raise TypeError(
                f"decoder must have probabilities(latent) and grid_size (a per-cell decoder such "
                f"as GridCellRewardDecoder), got {type(decoder).__name__}"
            )
        super().__init__(in_keys=[mean_key], out_keys=[out_key])
        # Not a submodule: the ELBO loss owns the decoder (its mode, device and checkpoint).
        self._decoder = [decoder]
        # A collector resets finished envs at the end of a batch, before the updates, so the
        # first step of the next batch reads the prior decoded with the weights of before the
        # updates. A checkpoint keeps what that reset wrote (``last_reset``), and a resumed run
        # writes it again at its first reset (``replay_next_reset``), as the uninterrupted run.
        self.last_reset: torch.Tensor | None = None
        self.replay_next_reset: torch.Tensor | None = None

    @property
    def decoder(self) -> nn.Module:
        return self._decoder[0]

    def _decode(self, tensordict: TensorDictBase) -> TensorDictBase:
        with torch.no_grad():
            probs = self.decoder.probabilities(tensordict.get(self.in_keys[0]))
        tensordict.set(self.out_keys[0], probs)
        return tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._decode(next_tensordict)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        replay, self.replay_next_reset = self.replay_next_reset, None
        mean = tensordict_reset.get(self.in_keys[0])
        # A resume with another env.num_envs cannot continue the run exactly anyway: decode.
        if replay is not None and replay.shape[:-1] == mean.shape[:-1]:
            tensordict_reset.set(self.out_keys[0], replay.to(mean.device))
        else:
            self._decode(tensordict_reset)
        self.last_reset = tensordict_reset.get(self.out_keys[0]).detach().clone()
        return tensordict_reset

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._decode(tensordict)

    def write_sequence(self, trajectories: TensorDictBase) -> TensorDictBase:
        """Decode re-encoded beliefs *with* gradients: in PPO's re-encoding the RL loss reaches
        the encoder through the decoder (whose own gradients the ELBO's optimiser clears)."""
        probs = self.decoder.probabilities(trajectories.get(self.in_keys[0]))
        trajectories.set(self.out_keys[0], probs)
        return trajectories

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        mean = observation_spec[self.in_keys[0]]
        cells = self.decoder.grid_size**2
        observation_spec[self.out_keys[0]] = Unbounded(
            shape=(*mean.shape[:-1], cells), device=mean.device
        )
        return observation_spec


def hyper_state_transform(
    belief_keys: Sequence[NestedKey] = (BELIEF_MEAN, BELIEF_LOGVAR),
    observation_key: NestedKey | None = "observation",
    out_key: NestedKey = "hyper_state",
) -> CatTensors:
    """The transform that concatenates the observation and a belief into ``hyper_state``
    (the belief alone with ``observation_key=None``: the original RL2's policy input).

    Examples
    --------
    >>> t = hyper_state_transform()
    >>> t.out_keys
    ['hyper_state']
    """
    observation = [] if observation_key is None else [observation_key]
    return CatTensors(
        in_keys=[*observation, *belief_keys], out_key=out_key, del_keys=False, sort=False
    )


def reencode_hyper_state(
    transform: Transform, trajectories: TensorDictBase, out_key: NestedKey = "hyper_state"
) -> torch.Tensor:
    """The hyper-state of ``[N, T]`` stored whole tasks, recomputed with gradients by the very
    transforms that built it online (one definition of the hyper-state).

    Each step of ``transform`` (a ``Compose`` or a single transform) that carries state through
    time re-runs over the whole sequences by its ``write_sequence`` (the belief encoder, RL2's
    memory, and the decoded belief, which then keeps its gradients); the stateless ones (the
    done-flag cast, the concatenation, the time features) are applied as they are online. The
    stored entries those steps write are dropped first, so nothing stale is read.

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    >>> env = TransformedEnv(make_env(num_envs=2), varibad_transforms(encoder))
    >>> tasks = env.rollout(60, break_when_any_done=False)
    >>> again = reencode_hyper_state(varibad_transforms(encoder), tasks)
    >>> torch.allclose(again, tasks["hyper_state"], atol=1e-5)
    True
    """
    steps = list(transform) if isinstance(transform, Compose) else [transform]
    written = {out_key}
    for step in steps:
        written.update(step.out_keys)
    # Whole sub-tensordicts go (e.g. "belief"): a nested entry set on a shallow copy would
    # write into the caller's tensordict.
    roots = {key if isinstance(key, str) else key[0] for key in written}
    tasks = trajectories.exclude(*roots)
    for step in steps:
        sequence = getattr(step, "write_sequence", None)
        tasks = sequence(tasks) if sequence is not None else step(tasks)
    return tasks.get(out_key)


def policy_belief_keys(policy_belief: str) -> list[NestedKey]:
    """The belief entries of ``hyper_state``, in order, for a resolved ``algo.policy_belief``.

    The one place that fixes the layout: the transforms build ``hyper_state`` from these keys,
    and the agent sizes its networks and re-encodes stored tasks from them.

    Examples
    --------
    >>> policy_belief_keys("latent+decoded")
    [('belief', 'mean'), ('belief', 'logvar'), ('belief', 'decoded')]
    """
    layouts = {
        "latent": [BELIEF_MEAN, BELIEF_LOGVAR],
        "decoded": [BELIEF_DECODED],
        "latent+decoded": [BELIEF_MEAN, BELIEF_LOGVAR, BELIEF_DECODED],
    }
    if policy_belief not in layouts:
        raise ValueError(
            f"policy_belief must be one of {list(layouts)} (got {policy_belief!r}; 'auto' is "
            "resolved by the config: Config.policy_belief)"
        )
    return layouts[policy_belief]


#: A float copy of the root ``episode_done`` flag, for a hyper-state that holds it.
EPISODE_DONE_INPUT = "episode_done_input"


def varibad_transforms(
    encoder: BeliefEncoder,
    decoder: nn.Module | None = None,
    policy_belief: str = "latent",
    done_input: bool = False,
    tbptt_steps: int | None = None,
    observation: Transform | None = None,
) -> Compose:
    """Belief transform followed by the hyper-state concatenation, ready for ``TransformedEnv``.

    ``policy_belief`` picks the belief part of ``hyper_state``: ``"latent"`` (the original:
    mean and log-variance), ``"decoded"`` (``decoder``'s per-cell goal probabilities, see
    :class:`DecodedBelief`) or ``"latent+decoded"`` (both). With ``done_input`` the
    inner-episode-done flag (1.0 at the start state of every inner episode but the first)
    follows the observation, as the original's ``add_done_info`` appends it to the state:
    ``hyper_state = [observation, done, belief]``. ``tbptt_steps`` truncates backpropagation
    through time when PPO re-encodes stored tasks (:func:`reencode_hyper_state`).
    ``observation`` is a transform writing what ``hyper_state`` holds of the observation in
    its place (its one out key): for frames, :class:`~torchrl_bamdp.transforms.pixels.FlatPixels`
    or :class:`~torchrl_bamdp.transforms.pixels.EncoderFrameFeatures`.

    Examples
    --------
    >>> enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    >>> len(varibad_transforms(enc)), len(varibad_transforms(enc, done_input=True))
    (2, 3)
    """
    keys = policy_belief_keys(policy_belief)
    parts: list[Transform] = [VariationalBelief(encoder, tbptt_steps=tbptt_steps)]
    if BELIEF_DECODED in keys:
        if decoder is None:
            raise ValueError(f"policy_belief={policy_belief!r} needs the decoder")
        parts.append(DecodedBelief(decoder))
    if done_input:
        parts.append(
            DTypeCastTransform(
                torch.bool,
                torch.float32,
                in_keys=["episode_done"],
                out_keys=[EPISODE_DONE_INPUT],
                in_keys_inv=[],
                out_keys_inv=[],
            )
        )
        keys = [EPISODE_DONE_INPUT, *keys]
    observation_key: NestedKey = "observation"
    if observation is not None:
        parts.append(observation)
        (observation_key,) = observation.out_keys
    parts.append(hyper_state_transform(keys, observation_key=observation_key))
    return Compose(*parts)
