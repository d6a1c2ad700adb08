"""Training collection where ``train.collector`` says: in this process, in worker processes, or
on Ray actors, always with TorchRL's own collectors.

``single`` (the default) is one :class:`torchrl.collectors.Collector` over the trainer's own
belief-transformed env, as it always was: the belief transform holds the very encoder the ELBO
trains, so collection reads the latest weights without any copying.

``process`` and ``ray`` run ``train.num_collectors`` collectors elsewhere (TorchRL's
``MultiSyncCollector`` and ``RayCollector``, built by ``Collector(backend=...)``). Each one is a
*replica*: its env, its hyper-state transforms and its acting policy are built in the worker
from the config (:class:`WorkerEnvFactory`), for ``env.num_envs / num_collectors`` tasks,
seeded per worker (:func:`worker_seeds`). The belief lives in an env transform, not in the
policy, so after every update two things are copied to every replica (:meth:`TrainCollector.sync`):

* the acting policy, by TorchRL's weight sync scheme of the backend (``policy`` model id:
  ``MultiProcessWeightSyncScheme`` between processes, ``RayWeightSyncScheme`` to Ray actors);
* the model the hyper-state transforms read (:func:`hyper_state_modules`: the agent's modules
  other than actor and critic, VariBAD's encoder and decoders or RL2's memory, and the
  transforms' own tensors), as a ``state_dict`` loaded in every replica through the collectors'
  ``map_fn`` (TorchRL's call of a method in every worker, the same for both backends).

TorchRL 0.14.1's weight sync schemes cannot carry this second model to a worker's env: a
non-``policy`` model id in a worker makes the leaf ``Collector`` raise ``KeyError`` after
the weights arrived (the sender then waits for an acknowledgement that never comes), Ray's
connection step cannot address a model id with a dot in it (``env.transform``), and a second
``RayWeightSyncScheme`` times out in its gloo group. Hence the second path; without it the
replicas would act on the belief of their initial, random encoder.

With ``process`` and ``ray`` collection is synchronous (``sync=True``): the workers wait while
the trainer updates, and the next batch starts only after both copies arrived, so every batch is
collected with the weights of the update just before it, as with ``single``.

``process_async`` overlaps the two: one worker process (TorchRL's ``MultiAsyncCollector``) with
all ``env.num_envs`` tasks collects batch k+1 while the trainer updates on batch k, so batch k+1
is collected with the weights from before update k, one update behind the policy PPO starts
from. The worker records the log-probability of every action it takes
(``SamplingPolicy(log_prob=True)``) and PPO's ratio starts from those, the behaviour policy's, as
importance sampling needs; the belief stored with the batch is the worker's too, i.e. what the
policy acted on. The weights are copied while the worker waits between two batches, never
during one (:class:`_BetweenBatchesSyncCollector` says why), so a seed gives the same run. On
2 cores this is the one backend that is faster than ``single`` (``benchmarks/README.md``,
training throughput). Each worker's part of a batch is whole tasks
(``steps_per_batch`` is a multiple of the BAMDP horizon, and TorchRL's collector resets an env
only when its task is done); the parts are concatenated along the env dimension into one
``[env.num_envs, T]`` batch, so the trajectory buffer takes whole tasks and every frame is
counted once.

Reproducibility: with ``process`` a seed gives the same run (each worker's tasks, reset noise
and actions come from its own seeded streams, the weights are exact copies, and the parts are
concatenated in worker order); ``ray`` too on one machine (tested; on a cluster, the same holds
as long as every node computes the same floating point). A resumed run continues with new
worker seeds (derived from the frames already trained), not bit-identically.

Examples
--------
>>> worker_seeds(0, 2) == worker_seeds(0, 2), worker_seeds(0, 2) != worker_seeds(1, 2)
(True, True)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.collectors import Collector, MultiAsyncCollector
from torchrl.envs import TransformedEnv

from torchrl_bamdp.configs.schema import Config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.modules.actor_critic import SamplingPolicy
from torchrl_bamdp.trainers.agents import build_agent

#: The attribute of a worker's env holding :func:`hyper_state_modules` (what :meth:`sync` loads).
HYPER_STATE_ATTR = "hyper_state_modules"
#: The agent modules a replica's hyper-state transforms never read: the actor reaches the workers
#: as the acting policy (TorchRL's weight sync), the critic is not used while collecting.
_NOT_READ_BY_TRANSFORMS = ("actor", "critic")

#: Ray's environment variable for its workers' niceness (Ray's default: 15).
RAY_WORKER_NICENESS = "RAY_worker_niceness"


def local_ray_init(num_cpus: int) -> dict[str, Any]:
    """``ray.init`` arguments for the local Ray a run starts when no ``train.ray_address`` is set.

    Its workers run at niceness 0, not Ray's 15: the collectors are the run's main work, and
    at 15 beside other busy processes (nice 0) they starved until TorchRL's 60 s weight-sync
    rendezvous timed out (``tests/trainers/test_collection.py`` beside two training runs on 2
    cores: failed at 15, passed in 33 s at 0). A ``RAY_worker_niceness`` set in the
    environment still wins; the process environment is left as it is.

    Examples
    --------
    >>> local_ray_init(2)["num_cpus"]
    2
    """
    config: dict[str, Any] = {"num_cpus": num_cpus, "include_dashboard": False}
    if RAY_WORKER_NICENESS not in os.environ:
        config["_system_config"] = {"worker_niceness": 0}
    return config


def hyper_state_modules(agent: Any, env: TransformedEnv) -> nn.ModuleDict:
    """The modules the hyper-state transforms of ``env`` read, as one module.

    By the agent's contract (:class:`~torchrl_bamdp.trainers.agents.Agent`), what every env's
    transforms must see lives in a module the builder made once: an entry of
    ``agent.modules()`` (VariBAD's ``elbo_loss`` with its encoder and decoders, RL2's
    ``encoder``, auxiliary losses) or a tensor of the transforms themselves. This gathers both,
    without the actor and the critic; a worker's copy receives its ``state_dict`` after every
    update (:meth:`TrainCollector.sync`).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env
    >>> from torchrl_bamdp.trainers.agents import build_agent
    >>> env = make_env(num_envs=2)
    >>> agent = build_agent(load_config({}), env)
    >>> sorted(hyper_state_modules(agent, agent.transformed_env(env)))
    ['elbo_loss', 'transforms']
    """
    parts = {k: m for k, m in agent.modules().items() if k not in _NOT_READ_BY_TRANSFORMS}
    return nn.ModuleDict({"transforms": env.transform, **parts})


def worker_seeds(seed: int, num_workers: int, frames: int = 0) -> list[int]:
    """The seeds of the ``num_workers`` collectors of a run with ``seed`` that starts after
    ``frames`` trained frames (0 for a new run; a resumed run draws new tasks).

    Independent streams of one :class:`numpy.random.SeedSequence`, 63-bit (what
    ``torch.manual_seed`` takes), none equal to ``seed`` itself in practice.

    Examples
    --------
    >>> seeds = worker_seeds(3, 4)
    >>> len(set(seeds)), all(0 <= s < 2**63 for s in seeds)
    (4, True)
    >>> worker_seeds(3, 4, frames=960) != seeds
    True
    """
    root = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(frames),))
    return [int(child.generate_state(1, np.uint64)[0] >> 1) for child in root.spawn(num_workers)]


@dataclass(frozen=True)
class WorkerEnvFactory:
    """Builds one collector worker's env: the BAMDP env of ``num_envs`` tasks, the hyper-state
    transforms of an agent replica built from ``config``, and the replica's
    :func:`hyper_state_modules` on the env (attribute :data:`HYPER_STATE_ATTR`).

    Picklable (a config dataclass, two ints and an importable or cloud-pickled builder), so
    that TorchRL can send it to a worker process or a Ray actor and call it there. Calling it
    sets the torch threads (``train.num_threads``) and seeds the process's global torch stream
    with ``seed`` (the policy's action sampling), and builds the env with ``seed`` (tasks and
    simulator noise). The replica's weights are overwritten by the trainer's before the first
    batch.

    Parameters
    ----------
    config : Config
        The run's configuration (``env.num_envs`` is the whole batch; this worker gets
        ``num_envs`` of them).
    seed : int
        This worker's seed (:func:`worker_seeds`).
    num_envs : int
        Tasks run in parallel by this worker.
    builder : callable, optional
        ``builder(config, env) -> Agent``; the trainer's ``agent`` argument, else
        :func:`~torchrl_bamdp.trainers.agents.build_agent`. An algorithm or task family
        registered at run time must be registered in the worker too: register it when a module
        is imported, or name it by import path (``algo.builder``, ``env.factory``).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> env = WorkerEnvFactory(load_config({}), seed=7, num_envs=2)()
    >>> env.batch_size, sorted(getattr(env, HYPER_STATE_ATTR))
    (torch.Size([2]), ['elbo_loss', 'transforms'])
    """

    config: Config
    seed: int
    num_envs: int
    builder: Callable[[Config, Any], Any] | None = None

    def __call__(self) -> TransformedEnv:
        config = self.config
        torch.set_num_threads(config.train.num_threads)
        torch.manual_seed(self.seed)
        env = make_env_from_config(
            config.env, seed=self.seed, device=config.device, num_envs=self.num_envs
        )
        agent = (self.builder or build_agent)(config, env).to(torch.device(config.device))
        train_env = agent.transformed_env(env)
        setattr(train_env, HYPER_STATE_ATTR, hyper_state_modules(agent, train_env))
        return train_env


def whole_task_batch(batch: TensorDictBase, num_envs: int, steps: int) -> TensorDictBase:
    """A collected batch as ``[num_envs, steps]``: the workers' parts (``[num_collectors,
    num_envs / num_collectors, steps]`` from Ray, already concatenated from processes) one after
    the other along the env dimension, in worker order.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> parts = TensorDict({"x": torch.arange(12).reshape(2, 2, 3)}, [2, 2, 3])
    >>> whole_task_batch(parts, 4, 3)["x"][:, 0].tolist()
    [0, 3, 6, 9]
    """
    if batch.ndim == 3:
        batch = batch.reshape(-1, batch.shape[-1])
    if tuple(batch.shape) != (num_envs, steps):
        raise RuntimeError(
            f"the collector delivered a batch of shape {tuple(batch.shape)}; the trainer needs "
            f"[env.num_envs, steps_per_batch] = [{num_envs}, {steps}] (whole tasks per env)"
        )
    return batch


class _BetweenBatchesSyncCollector(MultiAsyncCollector):
    """TorchRL's ``MultiAsyncCollector`` (one worker, for ``train.collector=process_async``)
    that copies the trainer's weights to the worker while it waits between two batches.

    The worker starts its next batch as soon as the trainer has taken the last one, so it is
    collecting while the trainer updates; a control message that reaches it then (TorchRL's
    ``map_fn``, which loads the belief model) makes TorchRL drop the batch it is collecting and
    wait for a ``continue`` that never comes. So the weights go at the one moment the worker
    listens: when the trainer asks for the next batch, after that batch arrived and before the
    worker is told to go on (``update_at_each_batch``). Batch k+1 is then collected with the
    weights of update k-1, during update k: one update of lag, the same at every run of a seed.
    """

    def __init__(self, *args: Any, sync_fn: Callable[[], None], **kwargs: Any) -> None:
        self._sync_fn: Callable[[], None] | None = None  # TorchRL's own first sync: plain
        super().__init__(*args, update_at_each_batch=True, **kwargs)
        self._sync_fn = sync_fn

    def update_policy_weights_(self, policy_or_weights: Any = None, **kwargs: Any) -> None:
        if policy_or_weights is None and not kwargs and self._sync_fn is not None:
            self._sync_fn()  # the iterator's call between two batches: policy and belief model
            return
        super().update_policy_weights_(policy_or_weights, **kwargs)


class TrainCollector:
    """The training collector of ``config.train.collector``, yielding ``[env.num_envs, T]``
    batches of whole tasks (see the module docstring for what runs where and what is synced).

    Parameters
    ----------
    config : Config
        The run's configuration.
    agent : Agent
        The trainer's agent: its acting policy collects (``single``) or is copied to the
        workers; its :func:`hyper_state_modules` are copied with it.
    train_env : TransformedEnv
        The trainer's belief-transformed env: collected in (``single``), else the source of the
        transforms' tensors.
    total_frames : int
        Frames to collect, a whole number of batches.
    frames : int
        Frames the run has trained already (the workers' seeds depend on it).
    builder : callable, optional
        How the workers build their agent replica (the trainer's ``agent`` argument).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.envs import make_env_from_config
    >>> from torchrl_bamdp.trainers.agents import build_agent
    >>> config = load_config({"env": {"num_envs": 2}, "algo": {"ppo": {"minibatches": 2}}})
    >>> env = make_env_from_config(config.env, seed=0)
    >>> agent = build_agent(config, env)
    >>> collector = TrainCollector(config, agent, agent.transformed_env(env), total_frames=120)
    >>> [tuple(batch.shape) for batch in collector]
    [(2, 60)]
    >>> collector.shutdown()
    """

    def __init__(
        self,
        config: Config,
        agent: Any,
        train_env: TransformedEnv,
        total_frames: int,
        frames: int = 0,
        builder: Callable[[Config, Any], Any] | None = None,
    ) -> None:
        self.backend = config.train.collector
        self.num_envs, self.steps = config.env.num_envs, config.steps_per_batch
        self._policy = agent.acting_policy
        device = torch.device(config.device)
        common = {"frames_per_batch": config.frames_per_batch, "total_frames": total_frames}
        if self.backend == "single":
            self.collector = Collector(
                train_env,
                self._policy,
                device=device,
                auto_register_policy_transforms=False,
                **common,
            )
            return
        if not isinstance(self._policy, nn.Module):
            raise TypeError(
                f"train.collector={self.backend!r} copies the acting policy to its workers with "
                f"TorchRL's weight sync, which needs an nn.Module; agent {agent.name!r} acts with "
                f"a {type(self._policy).__name__} (use train.collector='single')"
            )
        self._hyper_state = hyper_state_modules(agent, train_env)
        num = config.train.num_collectors
        factories = [
            WorkerEnvFactory(config, seed, self.num_envs // num, builder)
            for seed in worker_seeds(config.seed, num, frames)
        ]
        if self.backend in ("process", "process_async"):
            from torchrl.weight_update import MultiProcessWeightSyncScheme

            options = {
                "device": device,
                "use_buffers": True,  # fixed specs (else TorchRL warns that it assumes so)
                "num_threads": config.train.num_threads,  # else TorchRL resets this process's
                "weight_sync_schemes": {"policy": MultiProcessWeightSyncScheme()},
                "auto_register_policy_transforms": False,
                **common,
            }
            if self.backend == "process":
                self.collector = Collector(
                    factories,
                    self._policy,
                    backend="process",
                    sync=True,
                    cat_results=0,  # the workers' [n / k, T] parts along the env dimension
                    **options,
                )
            else:
                if isinstance(self._policy, SamplingPolicy):
                    # The worker acts one update behind the trainer: it records the behaviour
                    # log-probabilities PPO's ratio must start from (the same actor, shared).
                    self._policy = SamplingPolicy(agent.actor, log_prob=True)
                # A copy for the worker: the tensors of the module given to a process collector
                # go to shared memory, so the worker would act on the trainer's live weights,
                # changing under it while PPO updates them (measured: a batch that left the
                # weights of its start after 15 of its 60 steps). The sync copies them over.
                self.collector = _BetweenBatchesSyncCollector(
                    factories, copy.deepcopy(self._policy), sync_fn=self._send_weights, **options
                )
        else:
            address = config.train.ray_address
            ray_init = {"address": address} if address is not None else local_ray_init(num)
            self.collector = Collector(
                factories,
                self._policy,
                backend="ray",
                sync=True,
                device=device,
                backend_options={
                    "ray_init_config": ray_init,  # used only if Ray is not initialised yet
                    "remote_configs": {"num_cpus": 1},
                    "collector_kwargs": {"auto_register_policy_transforms": False},
                },
                **common,
            )
        self.sync()  # the replicas were built with random weights

    def __iter__(self) -> Iterator[TensorDictBase]:
        if self.backend == "single":
            yield from self.collector
            return
        for batch in self.collector:
            yield whole_task_batch(batch, self.num_envs, self.steps)

    def sync(self) -> None:
        """Copy the trainer's weights to every worker (after every update; no-op with
        ``single``, whose collector reads the trainer's own modules, and with
        ``process_async``, whose collector copies them itself between two batches).

        The acting policy goes by TorchRL's weight sync scheme, the model of the hyper-state
        transforms (:func:`hyper_state_modules`) as a ``state_dict`` loaded by every worker's
        env replica. Both calls return once every worker holds the new weights.
        """
        if self.backend in ("single", "process_async"):
            return
        self._send_weights()

    def _send_weights(self) -> None:
        self.collector.update_policy_weights_(self._policy)
        # A copy: sent as is, the live tensors would be moved to shared memory (processes).
        state = {k: v.detach().clone() for k, v in self._hyper_state.state_dict().items()}
        self.collector.map_fn(
            f"env.{HYPER_STATE_ATTR}.load_state_dict",
            [(state,)] * self.collector.num_workers,
        )

    def shutdown(self) -> None:
        """Stop the collector (and its workers or actors)."""
        threads = torch.get_num_threads()
        self.collector.shutdown()
        # TorchRL's multi-process shutdown raises this process's torch threads by the number
        # of workers; the trainer goes on (final evaluation) with train.num_threads.
        torch.set_num_threads(threads)
