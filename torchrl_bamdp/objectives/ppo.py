"""TorchRL's clipped PPO loss, computed from the minibatch's tensors.

:class:`ClipPPOLoss` reads a minibatch through the actor's and critic's ``TensorDictModule``
wrappers: every call routes the distribution parameters and the value through tensordicts and
builds the distribution through ``ProbabilisticActor.get_dist``. On our networks (two hidden
layers of 64-128 units, minibatches of 240-400 steps) that dispatch costs more than the
networks' forward and backward passes together. Measured side by side on an idle 2-core CPU
(``benchmarks/ppo_loss_step.py``, ``benchmarks/README.md``): one PPO update 1.44x faster on
GridNavi and 1.37x on ``cheetah_vel``, with identical parameters after it. A PPO update is 64
(GridNavi) to 160 (MuJoCo, tuned) such steps per batch, the largest part of a training
iteration (``benchmarks/training_throughput.py``).

:class:`TensorClipPPOLoss` *is* a ``ClipPPOLoss`` (same constructor, keys, buffers, schedules
and state dict); only ``forward`` differs: it reads the entries of the minibatch once, calls
the actor's network and the critic's network directly and builds the policy distribution from
the actor's own distribution class and keywords
(:class:`~torchrl_bamdp.modules.actor_critic.ActorDistribution`, which
:class:`~torchrl_bamdp.modules.actor_critic.SamplingPolicy` acts with). Every output of
``ClipPPOLoss.forward`` is computed by the same formula, including the logged diagnostics, with
one difference: no Monte-Carlo fallback where an analytic entropy is not finite (see
``_entropy``: that test would read the device every minibatch).
``tests/objectives/test_ppo_loss.py`` checks values and gradients against
``ClipPPOLoss.forward`` for every policy distribution of
:func:`~torchrl_bamdp.modules.actor_critic.make_actor_critic`, with and without value clipping and
advantage normalisation, and with a Monte-Carlo entropy under the same random stream.

It supports what the trainer builds: an actor made by ``make_actor_critic`` (one network that
writes the distribution's parameters, then a ``ProbabilisticTensorDictModule``), a critic that
is one ``TensorDictModule``, the ``"mean"`` reduction, a scalar entropy coefficient, no delayed
(proximal) actor, no importance-ratio cap, no ``advantage_norm`` module and no excluded
advantage dimensions. Anything else is refused at construction, naming the argument.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torchrl.modules.distributions.utils import has_analytic_entropy, sample_and_log_prob
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.utils import distance_loss

from torchrl_bamdp.modules.actor_critic import ActorDistribution


class TensorClipPPOLoss(ClipPPOLoss):
    """``ClipPPOLoss`` whose forward calls the networks on the minibatch's tensors.

    Same arguments and outputs as :class:`torchrl.objectives.ClipPPOLoss` (``functional`` is
    always ``False``: the networks are called with their own parameters); see the module
    docstring for what is supported and why it exists.

    Parameters
    ----------
    actor_network, critic_network
        As ``ClipPPOLoss``'s, built by ``make_actor_critic``.
    diagnostics : bool
        ``True`` (default): every output of ``ClipPPOLoss``. ``False``: not ``ESS``,
        ``max_ratio``, ``mean_ratio`` and ``explained_variance``, which the trainer does not
        log (the loss terms and their gradients are the same).
    **kwargs
        ``ClipPPOLoss``'s keyword arguments.

    Examples
    --------
    >>> from torchrl.data import Categorical
    >>> from torchrl_bamdp.modules.actor_critic import make_actor_critic
    >>> actor, critic = make_actor_critic(3, Categorical(4, shape=(6,)))
    >>> loss = TensorClipPPOLoss(actor, critic, entropy_coeff=0.01)
    >>> batch = TensorDict({
    ...     "hyper_state": torch.randn(6, 3), "action": torch.randint(4, (6,)),
    ...     "action_log_prob": torch.full((6,), -1.386), "advantage": torch.randn(6, 1),
    ...     "value_target": torch.randn(6, 1)}, [6])
    >>> out = loss(batch)
    >>> reference = ClipPPOLoss(actor, critic, entropy_coeff=0.01, functional=False)(batch)
    >>> all(torch.allclose(out[k], reference[k]) for k in reference.keys())
    True
    """

    def __init__(
        self, actor_network, critic_network, *, diagnostics: bool = True, **kwargs
    ) -> None:
        # ClipPPOLoss always computes ESS, max_ratio and mean_ratio (and explained_variance by
        # default), a tenth of a small minibatch's step; without them only the loss terms,
        # entropy, clip_fraction, kl_approx (and value_clip_fraction) are returned.
        if kwargs.pop("functional", False):
            raise ValueError("TensorClipPPOLoss: functional must be False (got True)")
        super().__init__(actor_network, critic_network, functional=False, **kwargs)
        self.diagnostics = bool(diagnostics)
        unsupported = {
            "delay_actor": self.delay_actor,
            "max_importance_ratio": self.max_importance_ratio is not None,
            "advantage_norm": self.advantage_norm is not None,
            "normalize_advantage_exclude_dims": bool(self.normalize_advantage_exclude_dims),
            "entropy_coeff (a mapping)": self._entropy_coeff_map is not None,
            "critic_network (None)": not self._has_critic,
        }
        refused = [name for name, value in unsupported.items() if value]
        if refused:
            raise ValueError(
                f"TensorClipPPOLoss does not support {', '.join(refused)}; use ClipPPOLoss"
            )
        if self.reduction != "mean":
            raise ValueError(
                f"TensorClipPPOLoss: reduction must be 'mean' (got {self.reduction!r})"
            )
        # Plain references, not submodules: the loss's state dict stays ClipPPOLoss's.
        self._actor_distribution = ActorDistribution(actor_network)
        if not isinstance(critic_network, TensorDictModule) or len(critic_network.out_keys) != 1:
            raise ValueError(
                "TensorClipPPOLoss: critic_network must be one TensorDictModule with one "
                f"output, as make_actor_critic builds (got {critic_network})"
            )
        self._critic_in_keys = list(critic_network.in_keys)

    @property
    def minibatch_keys(self) -> list:
        """The entries :meth:`forward` reads: select them before cutting a batch into
        minibatches, so that the other entries of a collected batch (beliefs, ``next``, ...)
        are not permuted and copied every epoch."""
        keys = self.tensor_keys
        wanted = [
            self._actor_distribution.in_key,
            *self._critic_in_keys,
            keys.action,
            keys.sample_log_prob,
            keys.advantage,
            keys.value_target,
        ]
        if self.clip_value:
            wanted.append(keys.value)
        wanted.extend(self._loss_mask_keys())  # TorchRL's validity masks, where present
        return list(dict.fromkeys(wanted))

    def _entropy(self, dist: torch.distributions.Distribution) -> torch.Tensor:
        # ClipPPOLoss._get_entropy for one (non-composite) distribution, but without its
        # fallback to a Monte-Carlo estimate where an analytic entropy is not finite: that test
        # reads the device on every minibatch (a host sync). A non-finite entropy makes the loss
        # non-finite instead, and the trainer skips that step (train.on_nonfinite), as it does
        # for any non-finite loss. With a finite entropy (every test) the two are the same.
        if has_analytic_entropy(dist):
            return dist.entropy().unsqueeze(-1)
        _, log_prob = sample_and_log_prob(
            dist, (self.samples_mc_entropy,), reparameterize=dist.has_rsample
        )
        return (-log_prob.mean(0)).unsqueeze(-1)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        advantage = tensordict.get(keys.advantage, None)
        if advantage is None:
            raise KeyError(
                f"TensorClipPPOLoss: the minibatch has no {keys.advantage!r} entry; compute "
                "the advantage (e.g. with GAE) before the loss"
            )
        mask = None
        for key in self._loss_mask_keys():  # as LossModule._reduce_loss finds them
            found = tensordict.get(key, None)
            if found is not None:
                mask = found if mask is None else mask & found
        if self.normalize_advantage and advantage.numel() > 1:
            if mask is not None:
                raise ValueError(
                    "TensorClipPPOLoss: normalize_advantage with a validity mask in the "
                    "minibatch is not supported; use ClipPPOLoss"
                )
            # torchrl._utils._standardize without excluded dimensions.
            eps = torch.finfo(torch.float).resolution
            advantage = (advantage - advantage.mean()) / advantage.std().clamp_min(eps)

        previous_log_prob = tensordict.get(keys.sample_log_prob)
        if previous_log_prob.requires_grad:
            raise RuntimeError(f"tensordict stored {keys.sample_log_prob} requires grad.")
        dist = self._actor_distribution(tensordict.get(self._actor_distribution.in_key))
        log_prob = dist.log_prob(tensordict.get(keys.action))
        log_weight = (log_prob - previous_log_prob).unsqueeze(-1)
        if advantage.shape != log_weight.shape:
            raise ValueError(
                f"TensorClipPPOLoss: advantage of shape {tuple(advantage.shape)} does not "
                f"match the log-ratio's {tuple(log_weight.shape)}"
            )
        with torch.no_grad():
            kl_approx = (previous_log_prob - log_prob).unsqueeze(-1).mean()
        gain1 = log_weight.exp() * advantage
        log_weight_clip = log_weight.clamp(*self._clip_bounds)
        clip_fraction = (log_weight_clip != log_weight).to(log_weight.dtype).mean()
        gain2 = log_weight_clip.exp() * advantage
        # stack + min, not torch.minimum: on ties (every unclipped step) the gradient goes to
        # gain1 only, as in ClipPPOLoss, where minimum would split it between the two.
        gain = torch.stack([gain1, gain2], -1).min(dim=-1).values

        out: dict[str, torch.Tensor] = {
            "loss_objective": self._masked_mean(-gain, mask),
            "clip_fraction": clip_fraction,
            "kl_approx": kl_approx.detach(),
        }
        if self.entropy_bonus:
            entropy = self._entropy(dist)
            out["entropy"] = entropy.detach().mean()
            out["loss_entropy"] = self._masked_mean(-self.entropy_coeff * entropy, mask)

        target_return = tensordict.get(keys.value_target)
        critic_inputs = [tensordict.get(k) for k in self._critic_in_keys]
        if self.separate_losses:
            critic_inputs = [x.detach() for x in critic_inputs]
        state_value = self.critic_network.module(*critic_inputs)
        loss_value = distance_loss(target_return, state_value, loss_function=self.loss_critic_type)
        if self.clip_value:
            old_state_value = tensordict.get(keys.value)
            pre_clipped = state_value - old_state_value
            clipped = pre_clipped.clamp(-self.clip_value, self.clip_value)
            with torch.no_grad():
                out["value_clip_fraction"] = (pre_clipped != clipped).to(state_value.dtype).mean()
            loss_clipped = distance_loss(
                target_return, old_state_value + clipped, loss_function=self.loss_critic_type
            )
            loss_value = torch.maximum(loss_value, loss_clipped)
        out["loss_critic"] = self._masked_mean(self.critic_coeff * loss_value, mask)
        if not self.diagnostics:
            return TensorDict(out, batch_size=[])
        if self.log_explained_variance:
            with torch.no_grad():
                target, predicted = target_return.detach(), state_value.detach()
                residual = torch.var(target - predicted, correction=0, dim=0)
                total = torch.var(target, correction=0, dim=0)
                out["explained_variance"] = 1.0 - residual / (total + torch.finfo(target.dtype).eps)
        with torch.no_grad():
            flat = log_weight.squeeze(-1)
            ess = (2 * flat.logsumexp(0) - (2 * flat).logsumexp(0)).exp()
            out["ESS"] = ess / log_weight.shape[0]
            ratio = log_weight.exp()
            out["max_ratio"] = ratio.max()
            out["mean_ratio"] = ratio.mean()
        return TensorDict(out, batch_size=[])

    @staticmethod
    def _masked_mean(loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # LossModule._reduce_loss with reduction="mean", then ClipPPOLoss's squeeze(-1).
        if mask is None:
            return loss.mean()
        while mask.ndim < loss.ndim:
            mask = mask.unsqueeze(-1)
        mask = mask.expand_as(loss)
        return torch.where(mask, loss, torch.zeros_like(loss)).sum() / mask.sum().clamp_min(1)
