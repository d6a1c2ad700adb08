"""The VariBAD evidence lower bound as a TorchRL ``LossModule`` (DESIGN.md §2, "ELBO loss")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from torchrl_bamdp.envs.bamdp import TRUE_OBSERVATION
from torchrl_bamdp.modules.decoders import TransitionBatch
from torchrl_bamdp.modules.encoder import BeliefEncoder

#: Reductions over the trajectories of a batch (``kl_reduction``, ``task_reduction``).
TRAJECTORY_REDUCTIONS = ("mean", "sum")
#: How ELBO and decode steps are sub-sampled (``subsample_mode``); see :class:`ELBOLoss`.
SUBSAMPLE_MODES = ("rescaled", "original")
#: The unweighted value of each weighted term, returned beside it as a diagnostic (not trained:
#: only ``loss_*`` entries are summed into the objective, TorchRL's convention).
ELBO_DIAGNOSTICS = {
    "loss_kl": "kl",
    "loss_reward": "nll_reward",
    "loss_state": "nll_state",
    "loss_task": "nll_task",
}


def gaussian_kl(
    mean_q: torch.Tensor, logvar_q: torch.Tensor, mean_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p))) of diagonal Gaussians, summed
    over the last dimension.

    Examples
    --------
    >>> z = torch.zeros(1, 2)
    >>> gaussian_kl(z + 1.0, z, z, z)
    tensor([1.])
    """
    var_ratio = torch.exp(logvar_q - logvar_p)
    mahalanobis = (mean_q - mean_p).pow(2) * torch.exp(-logvar_p)
    return 0.5 * (var_ratio + mahalanobis - 1.0 - (logvar_q - logvar_p)).sum(-1)


class ELBOLoss(LossModule):
    r"""Negative VariBAD ELBO over whole BAMDP trajectories.

    For a batch of ``N`` trajectories of ``T`` transitions, all starting at a task start, the
    encoder is re-run with gradients over (a_t, r_{t+1}, true s_{t+1}) to get the posteriors
    q_{n,t} = q(m | tau_{n,:t}) for t = 0..T (q_{n,0} is the prior N(0, I)). For every
    (optionally sub-sampled) ELBO step t a latent m_{n,t} ~ q_{n,t} is drawn with the
    reparameterisation trick and decoded against (optionally sub-sampled) transitions j of the
    *whole* trajectory, past and future.

    **Notation.** T_n <= T real transitions of trajectory n (the rest is padding, see
    ``valid``); l_{n,t,j} the reward (or state) decoder's NLL of transition j under m_{n,t};
    l^task_{n,t} the task decoder's NLL; KL_{n,t} = KL(q_{n,t} || q_{n,t-1}) with
    q_{n,-1} = N(0, I); R(x_n) = (1/N) sum_n x_n for the reduction ``"mean"`` and sum_n x_n for
    ``"sum"`` (``kl_reduction`` for the KL, ``task_reduction`` for the task term).

    **Without sub-sampling** both modes compute::

        loss_reward = (1/N) sum_n sum_{t=0..T_n} sum_{j=0..T_n-1} l_{n,t,j}   (loss_state alike)
        loss_task   = R_task( sum_{t=0..T_n} l^task_{n,t} )
        loss_kl     = R_kl( sum_{t=0..T_n} KL_{n,t} )

    **subsample_mode="rescaled"** (ours, the default): one set E of ``elbo_subsample`` ELBO steps
    drawn without replacement from 0..T and one set J of ``decode_subsample`` decode steps from
    0..T-1, shared by the whole batch; the sums are rescaled into unbiased estimates of the full
    sums, and the KL keeps all its T + 1 terms (terms of padding steps are zero)::

        loss_reward = (1/N) sum_n (T+1)/|E| * T/|J| * sum_{t in E} sum_{j in J} l_{n,t,j}
        loss_task   = R_task( (T+1)/|E| * sum_{t in E} l^task_{n,t} )
        loss_kl     = R_kl( sum_{t=0..T} KL_{n,t} )

    **subsample_mode="original"** (the official implementation, ``vae.py``): per trajectory,
    K = ``elbo_subsample`` ELBO steps t_{n,1..K} drawn uniformly from 0..T_n *with replacement*,
    and for each of them L = ``decode_subsample`` decode steps j_{n,k,1..L} drawn uniformly from
    0..T_n-1 with replacement; nothing is rescaled and the KL is taken only at the sampled ELBO
    steps (a step drawn twice counts twice)::

        loss_reward = (1/N) sum_n sum_{k=1..K} sum_{l=1..L} l_{n, t_{n,k}, j_{n,k,l}}
        loss_task   = R_task( sum_{k=1..K} l^task_{n, t_{n,k}} )
        loss_kl     = R_kl( sum_{k=1..K} KL_{n, t_{n,k}} )

    The original's objective is ``subsample_mode="original"``, ``kl_reduction="sum"``,
    ``task_reduction="sum"`` with MSE decoders built with ``mse_reduction="mean"``: its KL is
    summed over trajectories while its reconstruction is averaged over them. Ours averages both,
    so that the balance between reconstruction and KL does not depend on the batch size.

    **Weights.** Each term is returned already multiplied by its weight (``reward_weight``,
    ``state_weight``, ``task_weight``, ``kl_weight``; TorchRL's convention, as
    ``ClipPPOLoss``'s ``entropy_coeff``), so the objective is the plain sum of the ``loss_*``
    entries, ``sum(v for k, v in out.items() if k.startswith("loss_"))``. The unweighted terms
    come beside them, detached, under ``kl``, ``nll_reward``, ``nll_state`` and ``nll_task``
    (diagnostics for logs; not part of the objective).

    **Truncated BPTT** (``tbptt_steps=k``, the original's ``tbptt_stepsize``, 50 on MuJoCo):
    the re-encoding runs the GRU over chunks of k transitions, ``[0, k), [k, 2k), ...``, and
    detaches the hidden state handed from one chunk to the next (``BeliefEncoder.sequence(...,
    detach_every=k)``). The loss value is unchanged (up to float rounding); its gradient is
    that of the same terms with every posterior q_{n,s} (s >= 1, computed from transitions
    0..s-1) differentiated only through the transitions of its own chunk,
    c(s) = floor((s - 1) / k): the inputs of transition t reach the terms only through the
    posteriors s with t < s <= k * (c(t) + 1), i.e. at most k steps after t (a KL term
    KL_{n,s} also reads q_{n,s-1} directly, so it reaches one posterior further back). The
    decoders' own inputs are not affected. ``None`` (default): full backpropagation through
    the whole trajectory, today's numbers exactly.

    **Episode-done input.** With an encoder built with ``done_input=True`` (the original's
    ``add_done_info``) the re-encoding also reads the inner-episode-done flags
    (``episode_done`` key, ``("next", "episode_done")``), exactly as
    :class:`~torchrl_bamdp.transforms.VariationalBelief` reads them online.

    Parameters
    ----------
    encoder : BeliefEncoder
        The encoder shared with the belief transform.
    reward_decoder, state_decoder, task_decoder : nn.Module, optional
        Decoders with an ``nll(latent, batch)`` method (see :mod:`torchrl_bamdp.modules.decoders`).
        At least one is required.
    elbo_subsample : int, optional
        Number of ELBO time steps t per batch (``"rescaled"``) or per trajectory
        (``"original"``); ``None``: all T + 1.
    decode_subsample : int, optional
        Number of transitions j to decode per ELBO step (``None``: all T).
    kl_reduction : {"mean", "sum"}
        Reduction of the KL over trajectories: ``"mean"`` (ours) or ``"sum"`` (the original).
    task_reduction : {"mean", "sum"}
        Reduction of the task term over trajectories: ``"mean"`` (ours) or ``"sum"`` (the
        original).
    subsample_mode : {"rescaled", "original"}
        How steps are sub-sampled when ``elbo_subsample`` or ``decode_subsample`` is set (above).
    tbptt_steps : int, optional
        Truncated backpropagation through time in the re-encoding, every ``tbptt_steps``
        transitions (above); ``None`` (default): none.
    reward_weight, state_weight, task_weight, kl_weight : float
        The weight of each term in the objective (above); 1 by default, ``algo.elbo.*_weight``
        in a run.
    generator : torch.Generator, optional
        The random stream of the sub-sampling and of the reparameterised latents, drawn on its
        own device and moved to the trajectories' (so a CPU generator gives the same numbers
        for trajectories on any device); ``None``: torch's global one on the trajectories'
        device. May be set later as ``loss.generator``.

    Examples
    --------
    >>> from torchrl_bamdp.modules import BeliefEncoder
    >>> from torchrl_bamdp.modules.decoders import GridCellRewardDecoder
    >>> enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    >>> loss = ELBOLoss(enc, reward_decoder=GridCellRewardDecoder(5, grid_size=5))
    >>> td = TensorDict({"observation": torch.zeros(2, 6, 2),
    ...                  "action": torch.zeros(2, 6, dtype=torch.long),
    ...                  "next": {"true_observation": torch.zeros(2, 6, 2),
    ...                           "reward": -0.1 * torch.ones(2, 6, 1)}}, [2, 6])
    >>> sorted(loss(td).keys())
    ['kl', 'loss_kl', 'loss_reward', 'nll_reward']
    >>> weighted = ELBOLoss(enc, reward_decoder=GridCellRewardDecoder(5, grid_size=5),
    ...                     kl_weight=0.1)
    >>> out = weighted(td)
    >>> torch.equal(out["loss_kl"], 0.1 * out["kl"])
    True
    >>> original = ELBOLoss(enc, reward_decoder=GridCellRewardDecoder(5, grid_size=5),
    ...                     elbo_subsample=4, kl_reduction="sum", subsample_mode="original")
    >>> original(td)["loss_kl"].shape
    torch.Size([])
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys (``loss.set_keys(reward=...)``).

        Attributes
        ----------
        observation, action, next_observation, reward, task : NestedKey
            Where the trajectory tensors live. ``next_observation`` is the state each transition
            really landed in (``("next", "true_observation")`` of
            :class:`~torchrl_bamdp.envs.BAMDPEnv`: the true last state at an inner-episode
            end), which the encoder and the decoders read.
        episode_done : NestedKey
            The inner-episode-done flag of each transition, read only when the encoder has
            ``done_input=True``.
        valid : NestedKey
            Optional ``[N, T]`` bool mask of real (not padding) steps, written by
            :class:`~torchrl_bamdp.data.TrajectoryBuffer` for trajectories shorter than the
            horizon. Padding steps are neither encoded into the terms nor decoded.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        next_observation: NestedKey = ("next", TRUE_OBSERVATION)
        reward: NestedKey = ("next", "reward")
        task: NestedKey = "task"
        episode_done: NestedKey = ("next", "episode_done")
        valid: NestedKey = "valid"

    default_keys = _AcceptedKeys

    def __init__(
        self,
        encoder: BeliefEncoder,
        reward_decoder: nn.Module | None = None,
        state_decoder: nn.Module | None = None,
        task_decoder: nn.Module | None = None,
        elbo_subsample: int | None = None,
        decode_subsample: int | None = None,
        generator: torch.Generator | None = None,
        kl_reduction: str = "mean",
        task_reduction: str = "mean",
        subsample_mode: str = "rescaled",
        tbptt_steps: int | None = None,
        reward_weight: float = 1.0,
        state_weight: float = 1.0,
        task_weight: float = 1.0,
        kl_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if reward_decoder is None and state_decoder is None and task_decoder is None:
            raise ValueError("ELBOLoss needs at least one of reward/state/task decoder")
        for name, value in (
            ("elbo_subsample", elbo_subsample),
            ("decode_subsample", decode_subsample),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be None or >= 1 (got {value})")
        if tbptt_steps is not None and (
            isinstance(tbptt_steps, bool) or not isinstance(tbptt_steps, int) or tbptt_steps < 1
        ):
            raise ValueError(
                f"ELBOLoss: tbptt_steps must be None or an int >= 1 (got {tbptt_steps!r})"
            )
        for name, value, allowed in (
            ("kl_reduction", kl_reduction, TRAJECTORY_REDUCTIONS),
            ("task_reduction", task_reduction, TRAJECTORY_REDUCTIONS),
            ("subsample_mode", subsample_mode, SUBSAMPLE_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"ELBOLoss: {name} must be one of {allowed} (got {value!r})")
        weights = {
            "loss_reward": reward_weight,
            "loss_state": state_weight,
            "loss_task": task_weight,
            "loss_kl": kl_weight,
        }
        for key, weight in weights.items():
            if not weight >= 0:  # also rejects NaN
                raise ValueError(
                    f"ELBOLoss: {key.removeprefix('loss_')}_weight must be >= 0 (got {weight})"
                )
        self.weights = weights
        self.encoder = encoder
        self.reward_decoder = reward_decoder
        self.state_decoder = state_decoder
        self.task_decoder = task_decoder
        self.elbo_subsample = elbo_subsample
        self.decode_subsample = decode_subsample
        self.kl_reduction = kl_reduction
        self.task_reduction = task_reduction
        self.subsample_mode = subsample_mode
        self.tbptt_steps = tbptt_steps
        # The Trainer gives the loss its own stream, so that an ELBO update running in a second
        # thread beside PPO draws exactly the numbers it would draw when run after PPO.
        self.generator = generator

    @property
    def in_keys(self) -> list[NestedKey]:
        keys = self.tensor_keys
        in_keys = [keys.action, keys.next_observation, keys.reward]
        if self._reads_done or self._decoders_read_done:
            in_keys.append(keys.episode_done)
        if self.state_decoder is not None or self.reward_decoder is not None:
            in_keys.append(keys.observation)
        if self.task_decoder is not None:
            in_keys.append(keys.task)
        return in_keys

    @property
    def _reads_done(self) -> bool:
        return bool(getattr(self.encoder, "done_input", False))

    @property
    def _decoders_read_done(self) -> bool:
        decoders = (self.reward_decoder, self.state_decoder)
        return any(bool(getattr(d, "done_input", False)) for d in decoders)

    @property
    def out_keys(self) -> list[str]:
        terms = ["loss_kl"]
        for name in ("reward", "state", "task"):
            if getattr(self, f"{name}_decoder") is not None:
                terms.append(f"loss_{name}")
        return terms + [ELBO_DIAGNOSTICS[key] for key in terms]

    def _weighted(self, terms: TensorDictBase) -> TensorDictBase:
        """The weighted ``loss_*`` terms, in the order computed, then the unweighted ones."""
        # The same products, in the same order, as the trainer's weighted sum before the
        # weights moved in here: a shipped run's numbers are bit for bit the same.
        out = TensorDict(
            {key: self.weights[key] * value for key, value in terms.items()}, batch_size=[]
        )
        for key, value in terms.items():
            out.set(ELBO_DIAGNOSTICS[key], value.detach())
        return out

    def _subsample(self, full: int, wanted: int | None, device: torch.device) -> torch.Tensor:
        if wanted is None or wanted >= full:
            return torch.arange(full, device=device)
        index = torch.randperm(full, device=self._random_device(device), generator=self.generator)
        return index[:wanted].sort().values.to(device)

    def _draw_with_replacement(self, upper: torch.Tensor, count: int) -> torch.Tensor:
        """``[*upper.shape, count]`` indices, each uniform on ``0..upper - 1`` (per entry)."""
        device = upper.device
        u = torch.rand(
            (*upper.shape, count), device=self._random_device(device), generator=self.generator
        ).to(device)
        bound = upper.unsqueeze(-1)
        # u < 1, but u * bound may round up to bound in float32: clamp.
        return torch.minimum((u * bound).long(), bound - 1)

    def _random_device(self, device: torch.device) -> torch.device:
        """Where random numbers are drawn: on the generator's device (the same numbers for data
        on any device), else on the data's with torch's global generator."""
        return self.generator.device if self.generator is not None else device

    def _noise(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(
            shape,
            dtype=like.dtype,
            device=self._random_device(like.device),
            generator=self.generator,
        )
        return noise.to(like.device)

    @staticmethod
    def _over_trajectories(per_trajectory: torch.Tensor, reduction: str) -> torch.Tensor:
        return per_trajectory.mean() if reduction == "mean" else per_trajectory.sum()

    def _required(self, tensordict: TensorDictBase, key: NestedKey) -> torch.Tensor:
        value = tensordict.get(key, None)
        if value is None:
            raise KeyError(
                f"{type(self).__name__}: the trajectories have no entry {key!r} (set it with "
                f"loss.set_keys(...)); available: {sorted(map(str, tensordict.keys(True, True)))}"
            )
        return value

    def _batch(self, tensordict: TensorDictBase) -> TransitionBatch:
        keys = self.tensor_keys
        next_obs = self._required(tensordict, keys.next_observation)
        obs = tensordict.get(keys.observation, None)
        if obs is None:
            obs = torch.zeros_like(next_obs)
        task = tensordict.get(keys.task, None) if self.task_decoder is not None else None
        if task is not None and task.ndim == 3:
            task = task[:, 0]  # the task is constant along a BAMDP trajectory
        done = prev_done = None
        if self._decoders_read_done:
            done = self._required(tensordict, keys.episode_done)
            # The flag of the state acted in: the previous transition's, 0 at a task start
            # (the trajectories are whole tasks), as the policy's done input reads it.
            prev_done = torch.cat([torch.zeros_like(done[:, :1]), done[:, :-1]], dim=1)
        return TransitionBatch(
            obs=obs,
            action=self._required(tensordict, keys.action),
            next_obs=next_obs,
            reward=self._required(tensordict, keys.reward),
            task=task,
            done=done,
            prev_done=prev_done,
        )

    def kl_terms(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``[N, T + 1]`` KL terms ``KL(q_t || q_{t-1})`` of the beliefs ``q_0..q_T`` (``mean``,
        ``logvar``: ``[N, T + 1, L]``), with ``q_{-1} = N(0, I)`` before the first.

        Subclasses with another prior over how the belief moves override this (the switching
        ELBO's mixture prior).
        """
        # KL(q_t || q_{t-1}), q_{-1} = N(0, I): prepend the standard normal to the sequence.
        prior_mean = torch.zeros_like(mean[:, :1])
        prev_mean = torch.cat([prior_mean, mean[:, :-1]], dim=1)
        prev_logvar = torch.cat([torch.zeros_like(prior_mean), logvar[:, :-1]], dim=1)
        return gaussian_kl(mean, logvar, prev_mean, prev_logvar)

    def _beliefs_and_kl(
        self, tensordict: TensorDictBase
    ) -> tuple[
        TransitionBatch, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        """What every ELBO of this family starts from: the batch, the re-encoded beliefs
        ``q_0..q_T`` (``mean``, ``logvar``), their masked KL terms (:meth:`kl_terms`), which
        transitions are real (``step_valid``, ``[N, T]``) and which beliefs exist
        (``posterior_valid``, ``[N, T + 1]``)."""
        if tensordict.ndim != 2:
            raise ValueError(
                f"{type(self).__name__} expects [N, T] trajectories (batch, time); got "
                f"batch_size {tuple(tensordict.batch_size)}"
            )
        batch = self._batch(tensordict)
        n, t = tensordict.batch_size
        mean, logvar, _ = self._encode(tensordict, batch)
        step_valid = tensordict.get(self.tensor_keys.valid, None)
        if step_valid is None:
            step_valid = torch.ones(n, t, dtype=torch.bool, device=batch.next_obs.device)
        step_valid = step_valid.reshape(n, t)
        # Posterior t exists when transition t - 1 is real (the prior, t = 0, always does).
        posterior_valid = torch.cat([step_valid[:, :1].new_ones(n, 1), step_valid], dim=1)
        kl = self.kl_terms(mean, logvar) * posterior_valid  # [N, T + 1]
        return batch, mean, logvar, kl, step_valid, posterior_valid

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        batch, mean, logvar, kl, step_valid, posterior_valid = self._beliefs_and_kl(tensordict)
        if self.subsample_mode == "rescaled":
            terms = self._rescaled(batch, mean, logvar, kl, step_valid, posterior_valid)
        else:
            terms = self._original(batch, mean, logvar, kl, step_valid, posterior_valid)
        return self._weighted(terms)

    def _encode(
        self, tensordict: TensorDictBase, batch: TransitionBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Re-run the encoder over the trajectories (with the options' extra arguments only)."""
        kwargs = {}
        if self._reads_done:
            kwargs["done"] = self._required(tensordict, self.tensor_keys.episode_done)
        if self.tbptt_steps is not None:
            kwargs["detach_every"] = self.tbptt_steps
        return self.encoder.sequence(batch.action, batch.reward, batch.next_obs, **kwargs)

    def _rescaled(
        self,
        batch: TransitionBatch,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        kl: torch.Tensor,
        step_valid: torch.Tensor,
        posterior_valid: torch.Tensor,
    ) -> TensorDictBase:
        """Shared sub-sampled steps, rescaled sums, every KL term (see the class docstring)."""
        n, t = step_valid.shape
        device = mean.device
        out = TensorDict(
            {"loss_kl": self._over_trajectories(kl.sum(1), self.kl_reduction)}, batch_size=[]
        )
        elbo_index = self._subsample(t + 1, self.elbo_subsample, device)
        elbo_scale = (t + 1) / len(elbo_index)
        std = torch.exp(0.5 * logvar[:, elbo_index])
        latent = mean[:, elbo_index] + std * self._noise(std.shape, std)  # [N, Te, L]

        decode_index = self._subsample(t, self.decode_subsample, device)
        decode_scale = t / len(decode_index)
        decoded = batch.select_steps(decode_index) if len(decode_index) < t else batch
        pair_valid = (
            posterior_valid[:, elbo_index].unsqueeze(2) & step_valid[:, decode_index].unsqueeze(1)
        ).float()  # [N, Te, Tj]
        for name in ("reward", "state"):
            decoder = getattr(self, f"{name}_decoder")
            if decoder is not None:
                nll = decoder.nll(latent, decoded) * pair_valid  # [N, Te, Tj]
                out.set(f"loss_{name}", nll.sum((1, 2)).mean() * elbo_scale * decode_scale)
        if self.task_decoder is not None:
            nll = self.task_decoder.nll(latent, batch) * posterior_valid[:, elbo_index]
            out.set(
                "loss_task", self._over_trajectories(nll.sum(1) * elbo_scale, self.task_reduction)
            )
        return out

    def _original(
        self,
        batch: TransitionBatch,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        kl: torch.Tensor,
        step_valid: torch.Tensor,
        posterior_valid: torch.Tensor,
    ) -> TensorDictBase:
        """Per-trajectory draws with replacement, no rescaling, KL at the sampled ELBO steps."""
        n, t = step_valid.shape
        device = mean.device
        lengths = step_valid.sum(1)  # T_n
        rows = torch.arange(n, device=device)
        if self.elbo_subsample is None:
            elbo_index = torch.arange(t + 1, device=device).expand(n, t + 1)
            elbo_weight = posterior_valid.to(mean.dtype)
        else:
            # t_{n,k} uniform on 0..T_n: posteriors of real steps only, no weights needed.
            elbo_index = self._draw_with_replacement(lengths + 1, self.elbo_subsample)
            elbo_weight = torch.ones(elbo_index.shape, dtype=mean.dtype, device=device)
        k = elbo_index.shape[1]
        std = torch.exp(0.5 * logvar[rows.unsqueeze(1), elbo_index])
        latent = mean[rows.unsqueeze(1), elbo_index] + std * self._noise(std.shape, std)
        out = TensorDict(
            {
                "loss_kl": self._over_trajectories(
                    (kl.gather(1, elbo_index) * elbo_weight).sum(1), self.kl_reduction
                )
            },
            batch_size=[],
        )
        if self.decode_subsample is None:
            decoded, flat = batch, False
            weight = elbo_weight.unsqueeze(2) * step_valid.unsqueeze(1).to(mean.dtype)
        else:
            # j_{n,k,l} uniform on 0..T_n - 1, drawn afresh for every sampled ELBO step.
            decode_index = self._draw_with_replacement(
                lengths.unsqueeze(1).expand(n, k), self.decode_subsample
            )  # [N, K, L]
            decoded, flat = _gather_steps(batch, decode_index), True
            weight = elbo_weight.unsqueeze(2).expand(decode_index.shape)
        for name in ("reward", "state"):
            decoder = getattr(self, f"{name}_decoder")
            if decoder is None:
                continue
            if flat:
                # Every (n, k) has its own decode steps: decode them as N * K trajectories of
                # L steps with one latent each.
                nll = decoder.nll(latent.reshape(n * k, 1, -1), decoded).reshape(weight.shape)
            else:
                nll = decoder.nll(latent, decoded)  # [N, K, T]
            out.set(f"loss_{name}", (nll * weight).sum((1, 2)).mean())
        if self.task_decoder is not None:
            nll = self.task_decoder.nll(latent, batch) * elbo_weight  # [N, K]
            out.set("loss_task", self._over_trajectories(nll.sum(1), self.task_reduction))
        return out


def _gather_steps(batch: TransitionBatch, index: torch.Tensor) -> TransitionBatch:
    """The transitions ``index [N, K, L]`` of each trajectory, as ``[N * K, L]`` trajectories."""
    n, k, steps = index.shape
    rows = torch.arange(n, device=index.device).view(n, 1, 1)

    def pick(x: torch.Tensor) -> torch.Tensor:
        picked = x[rows, index]  # [N, K, L, ...]
        return picked.reshape(n * k, steps, *x.shape[2:])

    picked = batch.map_steps(pick)
    picked.task = None if batch.task is None else batch.task.repeat_interleave(k, dim=0)
    return picked
