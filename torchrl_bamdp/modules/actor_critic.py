"""Policy and value networks on the hyper-state, as TorchRL modules."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictModule, TensorDictModule, TensorDictModuleBase
from tensordict.nn.distributions import AddStateIndependentNormalScale
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Categorical, TensorSpec
from torchrl.envs.utils import exploration_type
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.modules.distributions import IndependentNormal, NormalParamExtractor

from torchrl_bamdp.utils import ACTIVATIONS, make_mlp, merge_running_moments

#: Policy distributions for continuous actions (``make_actor_critic(continuous_dist=...)``).
CONTINUOUS_DISTRIBUTIONS = ("tanh_normal", "gaussian")
#: The original's lower bound on the Gaussian policy's standard deviation (``min_std``).
GAUSSIAN_MIN_STD = 1e-6


class InputNormalizer(nn.Module):
    """Running mean/std normalisation of the policy input (states and latents, as the original).

    Statistics change only through :meth:`update` (the trainer calls it once per collected
    batch), so the actor is a fixed function during each PPO update and within a collection.
    They live in buffers, so they are saved and restored with the actor's ``state_dict``.

    ``raw_dims`` leading entries pass through unchanged: the pixels of an image observation in
    the hyper-state, already scaled to ``[0, 1]``. Normalised per pixel by running statistics, a
    pixel that is rarely lit (a far cell) would have a tiny variance and read as a huge value
    the few times it is; the CNN that embeds them wants the image as it is.

    Examples
    --------
    >>> norm = InputNormalizer(2)
    >>> norm.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
    >>> norm(torch.tensor([[1.0, 20.0]]))
    tensor([[0., 0.]])
    >>> norm = InputNormalizer(3, raw_dims=1)
    >>> norm.update(torch.tensor([[0.0, 0.0, 10.0], [1.0, 2.0, 30.0]]))
    >>> norm(torch.tensor([[1.0, 1.0, 20.0]]))
    tensor([[1., 0., 0.]])
    """

    def __init__(
        self,
        dim: int,
        clip: float = 10.0,
        eps: float = 1e-8,
        key: NestedKey = "hyper_state",
        raw_dims: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= raw_dims <= dim:
            raise ValueError(f"InputNormalizer: raw_dims must be in [0, {dim}] (got {raw_dims})")
        # The entry of a collected batch whose statistics this normaliser tracks.
        self.key = key
        self.clip = clip
        self.eps = eps
        # A plain attribute, not a buffer: the state_dict keeps the keys it always had.
        self.raw_dims = int(raw_dims)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the statistics of ``x`` (``[..., dim]``) into the running ones."""
        x = x.reshape(-1, x.shape[-1]).to(self.mean.dtype)
        merge_running_moments(self.mean, self.var, self.count, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.raw_dims:
            raw, x = x[..., : self.raw_dims], x[..., self.raw_dims :]
            mean, var = self.mean[self.raw_dims :], self.var[self.raw_dims :]
        else:
            mean, var = self.mean, self.var
        z = (x - mean) / torch.sqrt(var + self.eps)
        # Identity until the first update; torch.where, not `if count == 0` (a host sync).
        out = torch.where(self.count > 0, z.clamp(-self.clip, self.clip), x)
        return torch.cat([raw, out], dim=-1) if self.raw_dims else out


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


class InputEmbeddings(nn.Module):
    """Embed consecutive parts of the policy input separately, as the original's policy does.

    The original (``models/policy.py``) passes the state and the latent (mean, logvar) each
    through its own ``Linear`` + activation (16-d on GridNavi, 64-d on MuJoCo) and feeds the
    concatenated embeddings to the actor's and the critic's MLPs (one set of embeddings, shared
    by both). Here the input (the hyper-state, already normalised) is cut into consecutive
    segments, in order; each segment with a width > 0 is embedded, a segment of width 0 (e.g.
    the time features) is passed through unchanged.

    Parameters
    ----------
    segments : mapping of str to (int, int) or nn.Module
        ``name -> (size, width)`` in input order; the sizes must add up to the input size.
        Names label the parameters (``embeddings.<name>.weight``) and must be valid module names.
        A segment may instead be a module with ``in_features`` and ``out_features`` (e.g. the
        :class:`~torchrl_bamdp.modules.pixels.PixelEmbedding` of a flattened frame), used as
        that segment's embedding as it is.
    activation : str
        The activation after each embedding (the original: the policy's activation).

    Examples
    --------
    >>> emb = InputEmbeddings({"observation": (2, 16), "belief": (10, 16), "time": (2, 0)})
    >>> emb.in_dim, emb.out_dim
    (14, 34)
    >>> emb(torch.zeros(3, 14)).shape
    torch.Size([3, 34])
    """

    def __init__(self, segments: Mapping[str, tuple[int, int]], activation: str = "tanh") -> None:
        super().__init__()
        given: dict[str, nn.Module] = {}
        if isinstance(segments, Mapping):
            given = {n: m for n, m in segments.items() if isinstance(m, nn.Module)}
            segments = {
                n: (int(m.in_features), int(m.out_features)) if n in given else m
                for n, m in segments.items()
            }
        self.segments = _check_embeddings(segments)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"InputEmbeddings: activation must be one of {sorted(ACTIVATIONS)} "
                f"(got {activation!r})"
            )
        # PyTorch's default Linear init, as the original's FeatureExtractor.
        self.embeddings = nn.ModuleDict(
            {
                name: given[name]
                if name in given
                else nn.Sequential(nn.Linear(size, width), ACTIVATIONS[activation]())
                for name, (size, width) in self.segments.items()
                if width > 0
            }
        )
        self.in_dim = sum(size for size, _ in self.segments.values())
        self.out_dim = sum(width or size for size, width in self.segments.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"InputEmbeddings: input has {x.shape[-1]} features, the segments "
                f"{dict(self.segments)} add up to {self.in_dim}"
            )
        parts = x.split([size for size, _ in self.segments.values()], dim=-1)
        return torch.cat(
            [
                self.embeddings[name](part) if name in self.embeddings else part
                for name, part in zip(self.segments, parts, strict=True)
            ],
            dim=-1,
        )


def _check_embeddings(segments: Mapping[str, Iterable[int]]) -> dict[str, tuple[int, int]]:
    """``input_embeddings`` as ``{name: (size, width)}``, or a ValueError saying what is wrong."""
    allowed = "a mapping name -> (size > 0, width >= 0), e.g. {'observation': (2, 16)}"
    if not isinstance(segments, Mapping) or not segments:
        raise ValueError(f"input_embeddings must be None or {allowed} (got {segments!r})")
    checked: dict[str, tuple[int, int]] = {}
    for name, value in segments.items():
        pair = tuple(value) if isinstance(value, Iterable) else ()
        valid_name = isinstance(name, str) and name.isidentifier()
        if (
            not valid_name
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            or pair[0] < 1
            or pair[1] < 0
        ):
            raise ValueError(
                f"input_embeddings must be None or {allowed}; names must be identifiers "
                f"(got {name!r}: {value!r})"
            )
        checked[name] = (int(pair[0]), int(pair[1]))
    return checked


class _Scaled(nn.Module):
    """Orthogonal init with a small last layer: a near-uniform initial policy, as PPO likes.

    It reads one or more inputs, each with its own normaliser (or none), and concatenates them.
    An ``embedding`` (:class:`InputEmbeddings`, shared by actor and critic) maps the normalised
    first input before the extra inputs are appended; without one no submodule is registered,
    so parameter names stay those of checkpoints written before embeddings existed.
    """

    def __init__(
        self,
        net: nn.Sequential,
        last_gain: float,
        normalizer: InputNormalizer | None = None,
        *extra_normalizers: InputNormalizer | None,
        embedding: InputEmbeddings | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = normalizer
        if embedding is not None:
            self.embedding = embedding
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
        embedding = getattr(self, "embedding", None)
        if embedding is not None:
            x = embedding(x)
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
    continuous_dist: str = "tanh_normal",
    init_std: float = 1.0,
    input_embeddings: Mapping[str, tuple[int, int] | nn.Module] | None = None,
    raw_input_dims: int = 0,
) -> tuple[ProbabilisticActor, ValueOperator]:
    """Build a PPO actor and critic that read ``in_key`` (the hyper-state by default).

    ``critic_extra`` gives the critic more inputs than the actor, e.g. ``{"task": 2}`` for a
    *privileged* critic that knows the true task during training (the actor never reads it).
    As a baseline it keeps the policy gradient unbiased, since the action is drawn from the
    hyper-state alone; it removes the variance of the unknown task from the advantages.

    Discrete (``Categorical``) action specs get a categorical policy over logits; continuous
    (bounded) specs get, by ``continuous_dist``, a ``TanhNormal`` policy with a state-dependent
    scale (ours, the default) or the original's diagonal Gaussian with a state-independent
    learned log-std. The actor writes ``action`` and ``action_log_prob`` (the key ClipPPOLoss
    and GAE read by default).

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
    continuous_dist : {"tanh_normal", "gaussian"}
        The policy distribution for continuous actions (ignored for discrete ones).
        ``"tanh_normal"`` (default, today's): the MLP outputs loc and a state-dependent scale of
        a ``TanhNormal`` within the spec's bounds. ``"gaussian"`` reproduces the original
        (``DiagGaussian`` of ``models/policy.py``): the MLP outputs the mean only, the std is
        ``max(exp(log_std), 1e-6)`` of one learned ``log_std`` per action dimension that does
        not depend on the input (``AddStateIndependentNormalScale``, initialised to
        ``log(init_std)``), no tanh squashing: a sampled action may leave the spec's bounds
        (the envs clip it; BAMDPEnv's action check allows it for continuous specs). The
        distribution is TorchRL's ``IndependentNormal`` (log-prob summed over the action
        dimensions); greedy evaluation (``ExplorationType.DETERMINISTIC``) takes its mean.
    init_std : float
        Initial std of the ``"gaussian"`` policy (the original: ``policy_init_std=1.0``).
    input_embeddings : mapping of str to (int, int), optional
        ``None`` (default, today's network exactly): the MLPs read the (normalised) ``in_key``
        directly. A mapping ``name -> (size, width)`` reproduces the original's policy input
        embeddings: ``in_key`` is cut into consecutive segments of these sizes (they must add up
        to ``input_dim``), each passed through its own ``Linear(size, width)`` + ``activation``
        (width 0: passed unchanged), and the concatenation feeds both MLPs; one
        :class:`InputEmbeddings` is shared by actor and critic, as in the original, so collect
        their parameters once (:func:`unique_parameters`). E.g. for GridNavi's
        ``hyper_state = [observation (2), mean (5), logvar (5)]``:
        ``{"observation": (2, 16), "belief": (10, 16)}``. ``critic_extra`` inputs are not
        embedded. A segment may be a module (``in_features`` -> ``out_features``) instead, e.g.
        the CNN of a flattened frame (:class:`InputEmbeddings`).
    raw_input_dims : int
        The first ``raw_input_dims`` entries of ``in_key`` are not normalised (the pixels of a
        frame, already in ``[0, 1]``; see :class:`InputNormalizer`).

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

    The original's Gaussian policy with a state-independent std, on embedded inputs:

    >>> from torchrl.data import Bounded
    >>> spec = Bounded(-torch.ones(4, 2), torch.ones(4, 2), shape=(4, 2))
    >>> actor, critic = make_actor_critic(
    ...     12, spec, continuous_dist="gaussian",
    ...     input_embeddings={"observation": (2, 16), "belief": (10, 16)})
    >>> td = actor(TensorDict({"hyper_state": torch.randn(4, 12)}, [4]))
    >>> td["scale"].tolist()  # std 1.0 at init, whatever the input
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """
    if continuous_dist not in CONTINUOUS_DISTRIBUTIONS:
        raise ValueError(
            f"make_actor_critic: continuous_dist must be one of {CONTINUOUS_DISTRIBUTIONS} "
            f"(got {continuous_dist!r})"
        )
    if not (isinstance(init_std, int | float) and math.isfinite(init_std) and init_std > 0):
        raise ValueError(
            f"make_actor_critic: init_std must be a finite float > 0 (got {init_std!r})"
        )
    extra = dict(critic_extra or {})
    norm = (
        InputNormalizer(input_dim, key=in_key, raw_dims=raw_input_dims) if normalize_input else None
    )
    embedding = None
    mlp_in = input_dim
    if input_embeddings is not None:
        embedding = InputEmbeddings(input_embeddings, activation)
        if embedding.in_dim != input_dim:
            raise ValueError(
                f"make_actor_critic: the sizes of input_embeddings {dict(embedding.segments)} add "
                f"up to {embedding.in_dim}, not input_dim={input_dim}"
            )
        mlp_in = embedding.out_dim
    if isinstance(action_spec, Categorical):
        logits = _Scaled(
            make_mlp(mlp_in, action_spec.n, hidden, activation), 0.01, norm, embedding=embedding
        )
        module = TensorDictModule(logits, in_keys=[in_key], out_keys=["logits"])
        actor = ProbabilisticActor(
            module,
            in_keys=["logits"],
            spec=action_spec,
            distribution_class=torch.distributions.Categorical,
            return_log_prob=True,
        )
    elif continuous_dist == "gaussian":
        action_dim = action_spec.shape[-1]
        net = nn.Sequential(
            _Scaled(
                make_mlp(mlp_in, action_dim, hidden, activation), 0.01, norm, embedding=embedding
            ),
            AddStateIndependentNormalScale(
                action_dim,
                scale_mapping="exp",
                scale_lb=GAUSSIAN_MIN_STD,
                init_value=math.log(init_std),
            ),
        )
        module = TensorDictModule(net, in_keys=[in_key], out_keys=["loc", "scale"])
        actor = ProbabilisticActor(
            module,
            in_keys=["loc", "scale"],
            spec=action_spec,
            distribution_class=IndependentNormal,
            # No tanh on the mean (IndependentNormal's tanh_loc is off by default); spelled out
            # so SamplingPolicy and a reader see the whole distribution.
            distribution_kwargs={"tanh_loc": False},
            return_log_prob=True,
        )
    else:
        action_dim = action_spec.shape[-1]
        net = nn.Sequential(
            _Scaled(
                make_mlp(mlp_in, 2 * action_dim, hidden, activation),
                0.01,
                norm,
                embedding=embedding,
            ),
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
        make_mlp(mlp_in + sum(extra.values()), 1, hidden, activation),
        1.0,
        norm,
        *extra_norms,
        embedding=embedding,
    )
    critic = ValueOperator(critic_net, in_keys=[in_key, *extra])
    return actor, critic


class ActorDistribution:
    """The policy distribution of a :func:`make_actor_critic` actor, from its input tensor.

    The actor is a ``ProbabilisticActor`` of one ``TensorDictModule`` (input -> distribution
    parameters) and a ``ProbabilisticTensorDictModule``; this calls the same network (shared,
    not copied) and builds the same distribution class with the same keywords, without routing
    the parameters through tensordicts. A plain object, not a module: whoever holds it does not
    register the actor's parameters a second time. :class:`SamplingPolicy` acts with it,
    :class:`~torchrl_bamdp.objectives.TensorClipPPOLoss` computes PPO's log-ratios with it.

    Examples
    --------
    >>> actor, _ = make_actor_critic(3, Categorical(4, shape=(2,)))
    >>> to_distribution = ActorDistribution(actor)
    >>> to_distribution.in_key, type(to_distribution(torch.zeros(2, 3))).__name__
    ('hyper_state', 'Categorical')
    """

    def __init__(self, actor: ProbabilisticActor) -> None:
        params_module, sampler = actor.module[0], actor.module[-1]
        if not (
            len(actor.module) == 2
            and isinstance(params_module, TensorDictModule)
            and len(params_module.in_keys) == 1
            and isinstance(sampler, ProbabilisticTensorDictModule)
        ):
            raise ValueError(
                "ActorDistribution: actor must be a ProbabilisticActor of one TensorDictModule "
                f"(input -> distribution parameters), as make_actor_critic builds (got {actor})"
            )
        (self.in_key,) = params_module.in_keys
        # TensorDictModule(net) with net -> logits, or net -> (loc, scale).
        self.net = params_module.module
        self.sampler = sampler
        self.param_names = [k[-1] if isinstance(k, tuple) else k for k in sampler.dist_keys]
        self.distribution_class = sampler.distribution_class
        self.distribution_kwargs = dict(sampler.distribution_kwargs)

    def __call__(self, actor_input: torch.Tensor) -> torch.distributions.Distribution:
        params = self.net(actor_input)
        if not isinstance(params, tuple):
            params = (params,)
        return self.distribution_class(
            **dict(zip(self.param_names, params, strict=True)), **self.distribution_kwargs
        )


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
    log_prob : bool
        Also write the log-probability of the sampled action (the actor's
        ``log_prob_keys[0]``), for a collector whose actor may have changed by the time PPO
        reads the batch (``train.collector=process_async``): PPO's ratio then starts from the
        policy that acted. Default ``False``.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> from torchrl.data import Categorical
    >>> actor, _ = make_actor_critic(12, Categorical(5, shape=(4,)))
    >>> policy = SamplingPolicy(actor)
    >>> td = policy(TensorDict({"hyper_state": torch.zeros(4, 12)}, [4]))
    >>> td["action"].shape, "action_log_prob" in td.keys()
    (torch.Size([4]), False)
    >>> SamplingPolicy(actor, log_prob=True)(td)["action_log_prob"].shape
    torch.Size([4])
    """

    def __init__(self, actor: ProbabilisticActor, log_prob: bool = False) -> None:
        super().__init__()
        self.log_prob = bool(log_prob)
        self._log_prob_key = actor.log_prob_keys[0]
        self._to_distribution = ActorDistribution(actor)
        self._in_key = self._to_distribution.in_key
        # Registered here as before (the acting policy's modules are the actor's, shared).
        self.net, self._sampler = self._to_distribution.net, self._to_distribution.sampler
        self.in_keys = [self._in_key]
        self.out_keys = ["action", self._log_prob_key] if self.log_prob else ["action"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        dist = self._to_distribution(tensordict.get(self._in_key))
        action = self._sampler._dist_sample(dist, exploration_type())
        tensordict.set("action", action)
        if self.log_prob:
            tensordict.set(self._log_prob_key, dist.log_prob(action))
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


def unique_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``modules``, each once, in order of first appearance.

    Actor and critic share their :class:`InputEmbeddings` when ``input_embeddings`` is set, so
    ``list(actor.parameters()) + list(critic.parameters())`` would list the embeddings twice
    (an optimiser warns about duplicates, and ``clip_grad_norm_`` counts their norm twice).

    Examples
    --------
    >>> emb = {"observation": (2, 8), "belief": (10, 8)}
    >>> actor, critic = make_actor_critic(12, Categorical(5, shape=(4,)), input_embeddings=emb)
    >>> both = list(actor.parameters()) + list(critic.parameters())
    >>> len(both) - len(unique_parameters(actor, critic))  # two embeddings: weight and bias each
    4
    """
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for param in module.parameters():
            seen.setdefault(id(param), param)
    return list(seen.values())
