r"""VariBAD's ELBO for tasks that switch within a rollout, at unannounced times (issue 20, item 2).

On a :class:`~torchrl_bamdp.envs.SwitchingBAMDPEnv` the task follows the switching prior

.. math::

    m_0 \sim p, \qquad
    m_{t+1} \mid m_t = \begin{cases} m_t & \text{with probability } 1 - h \\
                                     m' \sim p & \text{with probability } h \end{cases}

and the reward of step t+1 comes from the task in force, :math:`r_{t+1} \sim p(r \mid s_t, a_t,
s_{t+1}, m_t)`. The rollout has no boundaries the agent is told of, so the belief is *never
reset* inside it: the encoder runs over the whole rollout, online (``VariationalBelief``, reset
only when a new rollout starts) and in the ELBO's re-encoding alike. What changes is what the
belief q_t = q(m | tau_{:t}) is asked to explain, and its prior.

**Reconstruction: the future, weighted by the probability that the task is still the same.**
VariBAD decodes every transition of the trajectory from every q_t, which is right when one task
generated them all. Here the task in force at a later step j = t + k is m_t only if no redraw
happened in between, with probability :math:`\rho_k = (1 - h)^k`; otherwise it is a draw m'
from the prior, independent of m_t. So, with :math:`\bar p(r) = E_{m' \sim p}\, p(r \mid m')`,

.. math::

    \log p(r_{j+1} \mid m_t) = \log\big(\rho_k\, p(r_{j+1} \mid m_t)
                                        + (1 - \rho_k)\, \bar p(r_{j+1})\big)
    \;\ge\; \rho_k \log p(r_{j+1} \mid m_t) + (1 - \rho_k) \log \bar p(r_{j+1})

(Jensen, the log being concave). The second term does not involve the belief and is dropped (it
would fit a model of the prior-predictive reward, which the belief does not need). What remains
is VariBAD's decoding term with the pair (t, j) weighted by :math:`(1 - h)^{j - t}`, for j >= t:
rewards beyond a likely switch are nearly uninformative about the task in force now, and get
nearly no weight. Transitions *before* t are not decoded: they too share the task with t only
with probability :math:`(1 - h)^{t - j}`, but the same bound would then penalise a belief that
has correctly dropped a task the data prove gone (GridNavi: the goal reward at a cell, later the
step penalty at that very cell) for no longer explaining its rewards, pulling q_t back to the
old task. The future is what a belief is for, and it is what this ELBO decodes. ``decode_window``
(optional) truncates the weights after that many steps, to save decoder work.

**KL: the switching prior's one-step predictive.** Under the switching prior the task at t
given the data up to t - 1 is distributed as :math:`(1 - h)\, q_{t-1} + h\, p` -- the exact Bayes
filter mixes its posterior back toward the prior at rate h every step (what
:class:`~torchrl_bamdp.transforms.SwitchingGridBelief` does exactly). The KL to a mixture has no
closed form; it is convex in its second argument, so

.. math::

    KL\big(q_t \,\|\, (1 - h)\, q_{t-1} + h\, p\big)
    \;\le\; (1 - h)\, KL(q_t \,\|\, q_{t-1}) + h\, KL(q_t \,\|\, p)

and the right side (closed form for Gaussians) keeps the objective a lower bound. With h = 0 it
is VariBAD's :math:`KL(q_t \| q_{t-1})`; with h = 1 every step's prior is p = N(0, I). It lets
the belief widen back toward the prior at the rate the switching prior says, where VariBAD's KL
penalises every move away from the last posterior equally.

**The objective** (``subsample_mode="rescaled"`` only: the steps of a batch are shared and sums
are rescaled to unbiased estimates, as :class:`~torchrl_bamdp.objectives.ELBOLoss`): with T
transitions per trajectory, a set E of ``elbo_subsample`` belief steps drawn without replacement
from 0..T-1 (the belief after the last transition has nothing left to decode), a set J of
``decode_subsample`` decode steps from 0..T-1, and :math:`w_{tj} = (1 - h)^{j - t}` for
:math:`t \le j < t + W` (W = ``decode_window``, or T), else 0::

    loss_reward = (1/N) sum_n T/|E| * T/|J| * sum_{t in E} sum_{j in J} w_tj * l_{n,t,j}
    loss_kl     = R_kl( sum_{t=0..T} [(1 - h) KL(q_{n,t} || q_{n,t-1}) + h KL(q_{n,t} || p)] )

(``loss_state`` alike; q_{n,-1} = p = N(0, I)). As VariBAD's, it is a sum of per-step bounds (a
composite likelihood), not one ELBO of the whole rollout. The task decoder is refused: it reads
the true task, which is privileged, and it changes along the trajectory.

Privileged
----------
Nothing here reads ``task`` or ``task_switched``: only actions, rewards, states and the hazard h
(a property of the task distribution, like the prior p, which the exact filter knows too).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from torchrl_bamdp.modules.encoder import BeliefEncoder
from torchrl_bamdp.objectives.elbo import ELBOLoss, gaussian_kl

__all__ = ["SwitchingELBOLoss", "switching_decode_weights"]


def switching_decode_weights(
    steps: int, hazard: float, window: int | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """``[steps, steps]`` weights ``w[t, j] = (1 - h) ** (j - t)`` for ``t <= j < t + window``.

    Row t is a belief (after t transitions), column j a transition to decode; 0 before t (the
    past is not decoded) and from ``t + window`` on (``None``: no truncation).

    Examples
    --------
    >>> switching_decode_weights(4, hazard=0.5, window=2)
    tensor([[1.0000, 0.5000, 0.0000, 0.0000],
            [0.0000, 1.0000, 0.5000, 0.0000],
            [0.0000, 0.0000, 1.0000, 0.5000],
            [0.0000, 0.0000, 0.0000, 1.0000]])
    """
    index = torch.arange(steps, device=device)
    lag = index.unsqueeze(0) - index.unsqueeze(1)  # [t, j] = j - t
    keep = lag >= 0
    if window is not None:
        keep &= lag < window
    weights = torch.pow(torch.tensor(1.0 - hazard, device=device), lag.clamp(min=0).float())
    return torch.where(keep, weights, torch.zeros_like(weights))


class SwitchingELBOLoss(ELBOLoss):
    """Negative VariBAD ELBO under the switching prior: hazard-weighted future decoding and the
    mixture-prior KL bound (the maths: :mod:`torchrl_bamdp.objectives.switching_elbo`).

    Parameters
    ----------
    encoder : BeliefEncoder
        The encoder shared with the belief transform (never reset inside a rollout).
    hazard : float
        The switching prior's per-step redraw probability h in [0, 1].
    decode_window : int, optional
        Decode at most this many transitions from each belief step on (``None``: to the end of
        the trajectory; the weights decay as ``(1 - h) ** k`` anyway).
    reward_decoder, state_decoder : nn.Module, optional
        As :class:`~torchrl_bamdp.objectives.ELBOLoss` (at least one).
    **kwargs
        ``elbo_subsample``, ``decode_subsample``, ``kl_reduction``, ``tbptt_steps``, the weights
        and ``generator``, as :class:`~torchrl_bamdp.objectives.ELBOLoss`
        (``subsample_mode`` must stay ``"rescaled"``).

    Examples
    --------
    >>> from torchrl_bamdp.modules import BeliefEncoder, GridCellRewardDecoder
    >>> enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    >>> loss = SwitchingELBOLoss(enc, hazard=0.1, reward_decoder=GridCellRewardDecoder(5, 5))
    >>> td = TensorDict({"observation": torch.zeros(2, 6, 2),
    ...                  "action": torch.zeros(2, 6, dtype=torch.long),
    ...                  "next": {"true_observation": torch.zeros(2, 6, 2),
    ...                           "reward": -0.1 * torch.ones(2, 6, 1)}}, [2, 6])
    >>> sorted(loss(td).keys())
    ['kl', 'loss_kl', 'loss_reward', 'nll_reward']
    """

    def __init__(
        self,
        encoder: BeliefEncoder,
        hazard: float,
        decode_window: int | None = None,
        reward_decoder: nn.Module | None = None,
        state_decoder: nn.Module | None = None,
        task_decoder: nn.Module | None = None,
        **kwargs,
    ) -> None:
        if task_decoder is not None:
            raise ValueError(
                "SwitchingELBOLoss: no task decoder: it would read the true task (privileged), "
                "which also changes along a switching rollout"
            )
        if kwargs.get("subsample_mode", "rescaled") != "rescaled":
            raise ValueError(
                "SwitchingELBOLoss: only subsample_mode='rescaled' (the original's sampling "
                f"belongs to its fixed-task ELBO); got {kwargs['subsample_mode']!r}"
            )
        hazard = float(hazard)
        if not 0.0 <= hazard <= 1.0:
            raise ValueError(f"SwitchingELBOLoss: hazard must be in [0, 1] (got {hazard})")
        if decode_window is not None and (
            isinstance(decode_window, bool)
            or not isinstance(decode_window, int)
            or decode_window < 1
        ):
            raise ValueError(
                "SwitchingELBOLoss: decode_window must be None or an int >= 1 (got "
                f"{decode_window!r})"
            )
        super().__init__(
            encoder, reward_decoder=reward_decoder, state_decoder=state_decoder, **kwargs
        )
        self.hazard = hazard
        self.decode_window = decode_window

    def kl_terms(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``[N, T + 1]`` KL terms ``(1 - h) KL(q_t || q_{t-1}) + h KL(q_t || N(0, I))``.

        Examples
        --------
        >>> from torchrl_bamdp.modules import BeliefEncoder, GridCellRewardDecoder
        >>> enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, latent_dim=1)
        >>> loss = SwitchingELBOLoss(enc, hazard=0.25, reward_decoder=GridCellRewardDecoder(1, 3))
        >>> mean = torch.tensor([[[0.0], [2.0], [2.0]]])  # prior, then a move to 2, then stay
        >>> loss.kl_terms(mean, torch.zeros_like(mean))  # 0.75 * 2 + 0.25 * 2, then 0.25 * 2
        tensor([[0.0000, 2.0000, 0.5000]])
        """
        zeros = torch.zeros_like(mean[:, :1])
        prev_mean = torch.cat([zeros, mean[:, :-1]], dim=1)
        prev_logvar = torch.cat([zeros, logvar[:, :-1]], dim=1)
        to_last = gaussian_kl(mean, logvar, prev_mean, prev_logvar)
        to_prior = gaussian_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(logvar))
        return (1.0 - self.hazard) * to_last + self.hazard * to_prior

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        batch, mean, logvar, kl, step_valid, posterior_valid = self._beliefs_and_kl(tensordict)
        t = step_valid.shape[1]
        device = batch.next_obs.device
        out = TensorDict(
            {"loss_kl": self._over_trajectories(kl.sum(1), self.kl_reduction)}, batch_size=[]
        )
        # Beliefs 0..T-1: the one after the last transition has no future to decode.
        elbo_index = self._subsample(t, self.elbo_subsample, device)
        elbo_scale = t / len(elbo_index)
        std = torch.exp(0.5 * logvar[:, elbo_index])
        latent = mean[:, elbo_index] + std * self._noise(std.shape, std)  # [N, Te, L]
        decode_index = self._subsample(t, self.decode_subsample, device)
        decode_scale = t / len(decode_index)
        decoded = batch.select_steps(decode_index) if len(decode_index) < t else batch
        weights = switching_decode_weights(t, self.hazard, self.decode_window, device)
        pair_weight = weights[elbo_index][:, decode_index].unsqueeze(0) * (
            posterior_valid[:, elbo_index].unsqueeze(2) & step_valid[:, decode_index].unsqueeze(1)
        ).to(mean.dtype)  # [N, Te, Tj]
        for name in ("reward", "state"):
            decoder = getattr(self, f"{name}_decoder")
            if decoder is not None:
                nll = decoder.nll(latent, decoded) * pair_weight
                out.set(f"loss_{name}", nll.sum((1, 2)).mean() * elbo_scale * decode_scale)
        return self._weighted(out)
