"""Policy and value networks on the hyper-state, as TorchRL modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Categorical, TensorSpec
from torchrl.envs.utils import exploration_type
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.modules.distributions import NormalParamExtractor

from torchrl_bamdp.utils import make_mlp, merge_running_moments


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

    def __init__(
        self, dim: int, clip: float = 10.0, eps: float = 1e-8, key: NestedKey = "hyper_state"
    ) -> None:
        super().__init__()
        # The entry of a collected batch whose statistics this normaliser tracks.
        self.key = key
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the statistics of ``x`` (``[..., dim]``) into the running ones."""
        x = x.reshape(-1, x.shape[-1]).to(self.mean.dtype)
        merge_running_moments(self.mean, self.var, self.count, x)

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
    """Orthogonal init with a small last layer: a near-uniform initial policy, as PPO likes.

    It reads one or more inputs, each with its own normaliser (or none), and concatenates them.
    """

    def __init__(
        self,
        net: nn.Sequential,
        last_gain: float,
        normalizer: InputNormalizer | None = None,
        *extra_normalizers: InputNormalizer | None,
    ) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.extra_normalizers = nn.ModuleList(
            nn.Identity() if n is None else n for n in extra_normalizers
        )
        for layer in net:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=2**0.5)
                nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(net[-1].weight, gain=last_gain)
        self.net = net

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        # A NaN/inf reward or observation makes the belief, hence the input, non-finite; the
        # trainer discards such batches (train.on_nonfinite), but sampling an action from NaN
        # logits would crash the collection first. Finite inputs pass through unchanged.
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if self.normalizer is not None:
            x = self.normalizer(x)
        if extra:
            parts = [
                norm(torch.nan_to_num(e.to(x.dtype), nan=0.0, posinf=0.0, neginf=0.0))
                for norm, e in zip(self.extra_normalizers, extra, strict=True)
            ]
            x = torch.cat([x, *parts], dim=-1)
        return self.net(x)


def make_actor_critic(
    input_dim: int,
    action_spec: TensorSpec,
    hidden: Sequence[int] = (32,),
    activation: str = "tanh",
    in_key: NestedKey = "hyper_state",
    normalize_input: bool = True,
    critic_extra: dict[NestedKey, int] | None = None,
) -> tuple[ProbabilisticActor, ValueOperator]:
    """Build a PPO actor and critic that read ``in_key`` (the hyper-state by default).

    ``critic_extra`` gives the critic more inputs than the actor, e.g. ``{"task": 2}`` for a
    *privileged* critic that knows the true task during training (the actor never reads it).
    As a baseline it keeps the policy gradient unbiased, since the action is drawn from the
    hyper-state alone; it removes the variance of the unknown task from the advantages.

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
        ``find_input_normalizers(actor)[0].update(batch["hyper_state"])``), and one per
        ``critic_extra`` entry in front of the critic (each normaliser's ``key`` names the entry
        it tracks).
    critic_extra : dict or None
        Extra critic inputs, entry -> size, concatenated after ``in_key``.

    Examples
    --------
    >>> from torchrl.data import Categorical
    >>> actor, critic = make_actor_critic(12, Categorical(5, shape=(4,)))
    >>> from tensordict import TensorDict
    >>> td = actor(TensorDict({"hyper_state": torch.zeros(4, 12)}, [4]))
    >>> td["action"].shape, critic(td)["state_value"].shape
    (torch.Size([4]), torch.Size([4, 1]))
    >>> _, critic = make_actor_critic(12, Categorical(5, shape=(4,)), critic_extra={"task": 2})
    >>> critic.in_keys, [n.key for n in find_input_normalizers(critic)]
    (['hyper_state', 'task'], ['hyper_state', 'task'])
    """
    extra = dict(critic_extra or {})
    norm = InputNormalizer(input_dim, key=in_key) if normalize_input else None
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
    extra_norms = [
        InputNormalizer(size, key=key) if normalize_input else None for key, size in extra.items()
    ]
    critic_net = _Scaled(
        make_mlp(input_dim + sum(extra.values()), 1, hidden, activation), 1.0, norm, *extra_norms
    )
    critic = ValueOperator(critic_net, in_keys=[in_key, *extra])
    return actor, critic


class SamplingPolicy(TensorDictModuleBase):
    """The actor of :func:`make_actor_critic` as a lean acting policy: ``action`` only.

    Collection and meta-test only need the action; TorchRL's ``ProbabilisticActor`` also
    computes ``action_log_prob`` and routes ``loc``/``scale`` (or ``logits``) through the
    tensordict, which costs more than the network itself at the batch sizes of a few envs
    (16 MuJoCo envs: 520 us per call vs 130 us here). This module runs the *same* network
    (shared, not copied) and the *same* distribution and sampling rule (the current exploration
    type: random while collecting, the deterministic sample at meta-test); the trainer computes
    the log-probabilities PPO needs afterwards for the whole batch at once with the actor
    (:func:`add_log_probs`), which is exactly the behaviour policy, since the actor does not
    change during a collection.

    Parameters
    ----------
    actor : ProbabilisticActor
        An actor made by :func:`make_actor_critic`.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> from torchrl.data import Categorical
    >>> actor, _ = make_actor_critic(12, Categorical(5, shape=(4,)))
    >>> policy = SamplingPolicy(actor)
    >>> td = policy(TensorDict({"hyper_state": torch.zeros(4, 12)}, [4]))
    >>> td["action"].shape, "action_log_prob" in td.keys()
    (torch.Size([4]), False)
    """

    def __init__(self, actor: ProbabilisticActor) -> None:
        super().__init__()
        params_module, self._sampler = actor.module[0], actor.module[-1]
        (self._in_key,) = params_module.in_keys
        # TensorDictModule(net) with net -> logits, or net -> (loc, scale).
        self.net = params_module.module
        self._param_names = list(self._sampler.in_keys)
        self._distribution = self._sampler.distribution_class
        self._distribution_kwargs = dict(self._sampler.distribution_kwargs)
        self.in_keys = [self._in_key]
        self.out_keys = ["action"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        params = self.net(tensordict.get(self._in_key))
        if not isinstance(params, tuple):
            params = (params,)
        dist = self._distribution(
            **dict(zip(self._param_names, params, strict=True)), **self._distribution_kwargs
        )
        action = self._sampler._dist_sample(dist, exploration_type())
        tensordict.set("action", action)
        return tensordict


def add_log_probs(actor: ProbabilisticActor, batch: TensorDictBase) -> TensorDictBase:
    """Write the actor's log-probability of the stored actions (its ``log_prob_keys[0]``).

    One call over a whole collected batch (any batch shape) instead of one per env step; used
    with :class:`SamplingPolicy`, which collects actions without them.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> from torchrl.data import Categorical
    >>> actor, _ = make_actor_critic(3, Categorical(5, shape=(2,)))
    >>> batch = TensorDict({"hyper_state": torch.zeros(2, 7, 3),
    ...                     "action": torch.zeros(2, 7, dtype=torch.long)}, [2, 7])
    >>> add_log_probs(actor, batch)["action_log_prob"].shape
    torch.Size([2, 7])
    """
    with torch.no_grad():
        dist = actor.get_dist(batch)
        batch.set(actor.log_prob_keys[0], dist.log_prob(batch.get("action")))
    return batch
