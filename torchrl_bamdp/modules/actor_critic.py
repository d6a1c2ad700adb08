"""Policy and value networks on the hyper-state, as TorchRL modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Categorical, TensorSpec
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.modules.distributions import NormalParamExtractor

from torchrl_bamdp.utils import make_mlp


class InputNormalizer(nn.Module):
    """Running mean/std normalisation of the policy input (states and latents, as the original).

    Statistics change only through :meth:`update` (the trainer calls it once per collected
    batch), so the actor is a fixed function during each PPO update and within a collection.
    They live in buffers, so they are saved and restored with the actor's ``state_dict``.

    Examples
    --------
    >>> norm = InputNormalizer(2)
    >>> norm.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
    >>> norm(torch.tensor([[1.0, 20.0]]))
    tensor([[0., 0.]])
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the statistics of ``x`` (``[..., dim]``) into the running ones."""
        x = x.reshape(-1, x.shape[-1]).to(self.mean.dtype)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (n / total)
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * (self.count * n / total)
        self.mean.copy_(new_mean)
        self.var.copy_((m2 / total).to(self.var.dtype))
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.count == 0:
            return x
        z = (x - self.mean) / torch.sqrt(self.var + self.eps)
        return z.clamp(-self.clip, self.clip)


def find_input_normalizers(module: nn.Module) -> list[InputNormalizer]:
    """The distinct :class:`InputNormalizer` instances inside ``module``.

    Examples
    --------
    >>> actor, critic = make_actor_critic(12, Categorical(5, shape=(4,)))
    >>> (norm,) = find_input_normalizers(actor)
    >>> find_input_normalizers(critic) == [norm]  # one normaliser shared by both networks
    True
    >>> actor, _ = make_actor_critic(12, Categorical(5, shape=(4,)), normalize_input=False)
    >>> find_input_normalizers(actor)
    []
    """
    found: dict[int, InputNormalizer] = {}
    for m in module.modules():
        if isinstance(m, InputNormalizer):
            found[id(m)] = m
    return list(found.values())


class _Scaled(nn.Module):
    """Orthogonal init with a small last layer: a near-uniform initial policy, as PPO likes."""

    def __init__(
        self, net: nn.Sequential, last_gain: float, normalizer: InputNormalizer | None = None
    ) -> None:
        super().__init__()
        self.normalizer = normalizer
        for layer in net:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=2**0.5)
                nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(net[-1].weight, gain=last_gain)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A NaN/inf reward or observation makes the belief, hence the input, non-finite; the
        # trainer discards such batches (train.on_nonfinite), but sampling an action from NaN
        # logits would crash the collection first. Finite inputs pass through unchanged.
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if self.normalizer is not None:
            x = self.normalizer(x)
        return self.net(x)


def make_actor_critic(
    input_dim: int,
    action_spec: TensorSpec,
    hidden: Sequence[int] = (32,),
    activation: str = "tanh",
    in_key: NestedKey = "hyper_state",
    normalize_input: bool = True,
) -> tuple[ProbabilisticActor, ValueOperator]:
    """Build a PPO actor and critic that read ``in_key`` (the hyper-state by default).

    Discrete (``Categorical``) action specs get a categorical policy over logits; continuous
    (bounded) specs get a ``TanhNormal`` policy with a state-dependent scale. The actor writes
    ``action`` and ``action_log_prob`` (the key ClipPPOLoss and GAE read by default).

    Parameters
    ----------
    input_dim : int
        Size of the hyper-state.
    action_spec : TensorSpec
        The environment's action spec (``env.action_spec``).
    hidden : sequence of int
        Hidden layer sizes of both networks.
    activation : str
        ``"tanh"``, ``"relu"`` or ``"elu"``.
    in_key : NestedKey
        The input entry.
    normalize_input : bool
        Put one shared :class:`InputNormalizer` in front of both networks (update it with
        ``find_input_normalizers(actor)[0].update(batch["hyper_state"])``).

    Examples
    --------
    >>> from torchrl.data import Categorical
    >>> actor, critic = make_actor_critic(12, Categorical(5, shape=(4,)))
    >>> from tensordict import TensorDict
    >>> td = actor(TensorDict({"hyper_state": torch.zeros(4, 12)}, [4]))
    >>> td["action"].shape, critic(td)["state_value"].shape
    (torch.Size([4]), torch.Size([4, 1]))
    """
    norm = InputNormalizer(input_dim) if normalize_input else None
    if isinstance(action_spec, Categorical):
        logits = _Scaled(make_mlp(input_dim, action_spec.n, hidden, activation), 0.01, norm)
        module = TensorDictModule(logits, in_keys=[in_key], out_keys=["logits"])
        actor = ProbabilisticActor(
            module,
            in_keys=["logits"],
            spec=action_spec,
            distribution_class=torch.distributions.Categorical,
            return_log_prob=True,
        )
    else:
        action_dim = action_spec.shape[-1]
        net = nn.Sequential(
            _Scaled(make_mlp(input_dim, 2 * action_dim, hidden, activation), 0.01, norm),
            NormalParamExtractor(),
        )
        module = TensorDictModule(net, in_keys=[in_key], out_keys=["loc", "scale"])
        actor = ProbabilisticActor(
            module,
            in_keys=["loc", "scale"],
            spec=action_spec,
            distribution_class=TanhNormal,
            # The bounds of one action: a batched env's spec repeats them per env, and the
            # distribution must broadcast over any batch (PPO minibatches are flat).
            distribution_kwargs={
                "low": action_spec.space.low.reshape(-1, action_dim)[0],
                "high": action_spec.space.high.reshape(-1, action_dim)[0],
            },
            return_log_prob=True,
        )
    critic_net = _Scaled(make_mlp(input_dim, 1, hidden, activation), 1.0, norm)
    critic = ValueOperator(critic_net, in_keys=[in_key])
    return actor, critic
