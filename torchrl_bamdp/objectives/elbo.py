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
    """Negative VariBAD ELBO over whole BAMDP trajectories.

    For a batch of ``N`` trajectories of ``T`` transitions, all starting at a task start, the
    encoder is re-run with gradients over (a_t, r_{t+1}, true s_{t+1}) to get the posteriors
    q_t = q(m | tau_:t) for t = 0..T (q_0 is the prior N(0, I)). For every (optionally
    sub-sampled) ELBO step t a latent m_t ~ q_t is drawn with the reparameterisation trick and
    decoded against every (optionally sub-sampled) transition j of the *whole* trajectory, past
    and future. The terms are

    - ``loss_reward`` / ``loss_state``: sum over t and j of the decoders' NLL, mean over N;
    - ``loss_task``: sum over t of the task decoder's NLL, mean over N;
    - ``loss_kl``: sum over t of KL(q_t || q_{t-1}) with q_{-1} = N(0, I), mean over N.

    With sub-sampling the sums are rescaled by (full count / sampled count), so they stay
    unbiased estimates of the full sums. The terms are returned unweighted: the trainer sums
    them with its weights (``kl_weight`` etc.).

    Parameters
    ----------
    encoder : BeliefEncoder
        The encoder shared with the belief transform.
    reward_decoder, state_decoder, task_decoder : nn.Module, optional
        Decoders with an ``nll(latent, batch)`` method (see :mod:`torchrl_bamdp.modules.decoders`).
        At least one is required.
    elbo_subsample : int, optional
        Number of ELBO time steps t to use per batch (``None``: all T + 1).
    decode_subsample : int, optional
        Number of transitions j to decode per ELBO step (``None``: all T).
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
    ['loss_kl', 'loss_reward']
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
        self.encoder = encoder
        self.reward_decoder = reward_decoder
        self.state_decoder = state_decoder
        self.task_decoder = task_decoder
        self.elbo_subsample = elbo_subsample
        self.decode_subsample = decode_subsample
        # The Trainer gives the loss its own stream, so that an ELBO update running in a second
        # thread beside PPO draws exactly the numbers it would draw when run after PPO.
        self.generator = generator

    @property
    def in_keys(self) -> list[NestedKey]:
        keys = self.tensor_keys
        in_keys = [keys.action, keys.next_observation, keys.reward]
        if self.state_decoder is not None or self.reward_decoder is not None:
            in_keys.append(keys.observation)
        if self.task_decoder is not None:
            in_keys.append(keys.task)
        return in_keys

    @property
    def out_keys(self) -> list[str]:
        out = ["loss_kl"]
        for name in ("reward", "state", "task"):
            if getattr(self, f"{name}_decoder") is not None:
                out.append(f"loss_{name}")
        return out

    def _subsample(self, full: int, wanted: int | None, device: torch.device) -> torch.Tensor:
        if wanted is None or wanted >= full:
            return torch.arange(full, device=device)
        index = torch.randperm(full, device=self._random_device(device), generator=self.generator)
        return index[:wanted].sort().values.to(device)

    def _random_device(self, device: torch.device) -> torch.device:
        """Where random numbers are drawn: on the generator's device (the same numbers for data
        on any device), else on the data's with torch's global generator."""
        return self.generator.device if self.generator is not None else device

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
        return TransitionBatch(
            obs=obs,
            action=self._required(tensordict, keys.action),
            next_obs=next_obs,
            reward=self._required(tensordict, keys.reward),
            task=task,
        )

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.ndim != 2:
            raise ValueError(
                f"ELBOLoss expects [N, T] trajectories (batch, time); got batch_size "
                f"{tuple(tensordict.batch_size)}"
            )
        batch = self._batch(tensordict)
        n, t = tensordict.batch_size
        device = batch.next_obs.device
        mean, logvar, _ = self.encoder.sequence(batch.action, batch.reward, batch.next_obs)
        # KL(q_t || q_{t-1}), q_{-1} = N(0, I): prepend the standard normal to the sequence.
        prior_mean = torch.zeros_like(mean[:, :1])
        prev_mean = torch.cat([prior_mean, mean[:, :-1]], dim=1)
        prev_logvar = torch.cat([torch.zeros_like(prior_mean), logvar[:, :-1]], dim=1)
        step_valid = tensordict.get(self.tensor_keys.valid, None)
        if step_valid is None:
            step_valid = torch.ones(n, t, dtype=torch.bool, device=device)
        step_valid = step_valid.reshape(n, t)
        # Posterior t exists when transition t - 1 is real (the prior, t = 0, always does).
        posterior_valid = torch.cat([step_valid[:, :1].new_ones(n, 1), step_valid], dim=1)
        kl = gaussian_kl(mean, logvar, prev_mean, prev_logvar) * posterior_valid
        loss_kl = kl.sum(1).mean()

        elbo_index = self._subsample(t + 1, self.elbo_subsample, device)
        elbo_scale = (t + 1) / len(elbo_index)
        std = torch.exp(0.5 * logvar[:, elbo_index])
        noise = torch.randn(
            std.shape, dtype=std.dtype, device=self._random_device(device), generator=self.generator
        ).to(device)
        latent = mean[:, elbo_index] + std * noise  # [N, Te, L]

        decode_index = self._subsample(t, self.decode_subsample, device)
        decode_scale = t / len(decode_index)
        decoded = batch.select_steps(decode_index) if len(decode_index) < t else batch
        pair_valid = (
            posterior_valid[:, elbo_index].unsqueeze(2) & step_valid[:, decode_index].unsqueeze(1)
        ).float()  # [N, Te, Tj]

        out = TensorDict({"loss_kl": loss_kl}, batch_size=[])
        for name in ("reward", "state"):
            decoder = getattr(self, f"{name}_decoder")
            if decoder is not None:
                nll = decoder.nll(latent, decoded) * pair_valid  # [N, Te, Tj]
                out.set(f"loss_{name}", nll.sum((1, 2)).mean() * elbo_scale * decode_scale)
        if self.task_decoder is not None:
            nll = self.task_decoder.nll(latent, batch) * posterior_valid[:, elbo_index]
            out.set("loss_task", nll.sum(1).mean() * elbo_scale)
        return out
