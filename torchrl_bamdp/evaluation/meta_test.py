"""Meta-test evaluation: per-episode returns on fixed, seeded test tasks (DESIGN.md §2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type


@dataclass
class MetaTestResult:
    """Returns of every test task split by inner-episode index.

    Attributes
    ----------
    returns : torch.Tensor
        ``[num_tasks, episodes]`` undiscounted return of each inner episode of each task.
    tasks : torch.Tensor, optional
        ``[num_tasks, task_dim]``: the task of each row (what :func:`meta_test` records).
    rollout : TensorDictBase, optional
        The ``[num_tasks, episodes * episode_length]`` rollout itself, when
        :func:`meta_test` was asked to keep it (``keep_rollout=True``), for analyses beyond the
        returns (e.g. what the agent did in each task).

    Examples
    --------
    >>> r = MetaTestResult(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    >>> r.mean, r.num_tasks
    ([2.0, 3.0], 2)
    >>> r = MetaTestResult(torch.tensor([[1.0], [3.0], [2.0]]), torch.tensor([[2.0], [4.0], [2.0]]))
    >>> r.per_task()
    [{'task': [2.0], 'count': 2, 'mean': [1.5]}, {'task': [4.0], 'count': 1, 'mean': [3.0]}]
    """

    returns: torch.Tensor
    tasks: torch.Tensor | None = None
    rollout: TensorDictBase | None = None

    def per_task(self) -> list[dict]:
        """Mean per-episode returns of each distinct task (in the order of first appearance):
        for a finite task set meta-tested stratified, each task's exact return with greedy
        actions. Empty without :attr:`tasks`."""
        if self.tasks is None:
            return []
        out: dict[tuple, list] = {}
        for task, row in zip(self.tasks.tolist(), self.returns.tolist(), strict=True):
            out.setdefault(tuple(task), []).append(row)
        return [
            {
                "task": list(task),
                "count": len(rows),
                "mean": torch.tensor(rows, dtype=torch.float64).mean(0).tolist(),
            }
            for task, rows in out.items()
        ]

    @property
    def num_tasks(self) -> int:
        return int(self.returns.shape[0])

    @property
    def mean(self) -> list[float]:
        """Mean return per episode index (1..k)."""
        return self.returns.mean(0).tolist()

    @property
    def stderr(self) -> list[float]:
        """Standard error of the mean per episode index (over tasks)."""
        if self.num_tasks < 2:
            return [float("nan")] * self.returns.shape[1]
        return (self.returns.std(0, unbiased=True) / math.sqrt(self.num_tasks)).tolist()

    def to_dict(self) -> dict:
        return {
            "num_tasks": self.num_tasks,
            "episodes": int(self.returns.shape[1]),
            "mean": self.mean,
            "stderr": self.stderr,
            "total_mean": float(self.returns.sum(1).mean()),
        }


def per_episode_returns(rollout: TensorDictBase, episodes: int) -> torch.Tensor:
    """Sum rewards of a ``[num_tasks, T]`` rollout by the root ``episode`` index.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> td = TensorDict({"episode": torch.tensor([[[0], [0], [1]]]),
    ...                  "next": {"reward": torch.tensor([[[1.0], [2.0], [5.0]]])}}, [1, 3])
    >>> per_episode_returns(td, episodes=2)
    tensor([[3., 5.]])
    """
    reward = rollout.get(("next", "reward")).reshape(rollout.shape)
    episode = rollout.get("episode").reshape(rollout.shape).long()
    out = torch.zeros(rollout.shape[0], episodes, dtype=reward.dtype, device=reward.device)
    return out.scatter_add_(1, episode.clamp(max=episodes - 1), reward)


def completed_episode_returns(batch: TensorDictBase, episodes: int) -> torch.Tensor:
    """Mean return per inner-episode index over the episodes a collected batch holds whole.

    A training batch ``[num_envs, T]`` may hold several tasks per env, or start and end in the
    middle of one; summing its rewards by the ``episode`` index (as
    :func:`per_episode_returns` does for meta-test rollouts, which are exactly one task each)
    would add up the episodes of different tasks and count cut ones. Here each inner episode
    is a segment from a start state (``step_in_episode == 0``) to its ``episode_done`` step;
    only segments that begin and end inside the batch count.

    Returns
    -------
    torch.Tensor
        ``[episodes]``: the mean over those segments of each index, ``NaN`` where none.

    Examples
    --------
    One env, episodes of 2 steps, 2 per task, and a batch of 6 steps that starts mid-episode:
    the cut first episode is left out, the two tasks' episode-2 returns are averaged.

    >>> from tensordict import TensorDict
    >>> td = TensorDict({
    ...     "episode": torch.tensor([[1, 0, 0, 1, 1, 0]]).unsqueeze(-1),
    ...     "step_in_episode": torch.tensor([[1, 0, 1, 0, 1, 0]]).unsqueeze(-1),
    ...     "next": {
    ...         "reward": torch.tensor([[9.0, 1.0, 1.0, 2.0, 4.0, 7.0]]).unsqueeze(-1),
    ...         "episode_done": torch.tensor([[1, 0, 1, 0, 1, 0]]).bool().unsqueeze(-1),
    ...     }}, [1, 6])
    >>> completed_episode_returns(td, episodes=2)
    tensor([2., 6.])
    """
    shape = batch.shape
    n, t = shape[0], shape[-1]
    reward = batch.get(("next", "reward")).reshape(n, t)
    done = batch.get(("next", "episode_done")).reshape(n, t)
    episode = batch.get("episode").reshape(n, t).long().clamp(max=episodes - 1)
    start = batch.get("step_in_episode").reshape(n, t) == 0
    # Segment s of a row is the s-th inner episode starting in the batch; 0 = cut at the start.
    segment = start.long().cumsum(1)
    ids = (torch.arange(n, device=reward.device).unsqueeze(1) * (t + 1) + segment).reshape(-1)
    size = n * (t + 1)
    totals = torch.zeros(size, dtype=reward.dtype, device=reward.device)
    totals.scatter_add_(0, ids, reward.reshape(-1))
    ended = torch.zeros(size, dtype=torch.long, device=reward.device)
    ended.scatter_add_(0, ids, done.reshape(-1).long())
    index = torch.zeros(size, dtype=torch.long, device=reward.device)
    index.scatter_reduce_(0, ids, episode.reshape(-1), reduce="amax", include_self=False)
    whole = (ended > 0) & (torch.arange(size, device=reward.device) % (t + 1) > 0)
    sums = torch.zeros(episodes, dtype=reward.dtype, device=reward.device)
    counts = torch.zeros(episodes, dtype=reward.dtype, device=reward.device)
    sums.scatter_add_(0, index[whole], totals[whole])
    counts.scatter_add_(0, index[whole], torch.ones_like(totals[whole]))
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.nan))


@torch.no_grad()
def meta_test(
    env: EnvBase,
    policy: Callable[[TensorDictBase], TensorDictBase],
    episodes: int,
    episode_length: int,
    seed: int = 12345,
    deterministic: bool = True,
    keep_rollout: bool = False,
) -> MetaTestResult:
    """Run one BAMDP of ``episodes`` inner episodes in each of the env's ``num_envs`` test tasks.

    The env must be a (transformed) :class:`~torchrl_bamdp.envs.BAMDPEnv` with
    ``episodes_per_task=episodes``; each batch element is one test task, drawn with ``seed`` so
    every call (and every algorithm) sees the same tasks. The belief is carried across episodes.

    Parameters
    ----------
    env : EnvBase
        Batched BAMDP env with the transforms that build the policy's input.
    policy : callable
        A TensorDict policy (e.g. the PPO actor).
    episodes, episode_length : int
        Inner episodes per task and their length.
    seed : int
        Seed of the test tasks.
    deterministic : bool
        Greedy (mode) actions if ``True``, sampled actions otherwise.
    keep_rollout : bool
        Keep the rollout in :attr:`MetaTestResult.rollout` (on the CPU).

    Examples
    --------
    A random policy on the 21 GridNavi tasks, each tested once (stratified), two episodes each:

    >>> from torchrl_bamdp.envs import make_env
    >>> from torchrl_bamdp.policies import uniform_random_policy
    >>> env = make_env(num_envs=21, stratified=True, episodes_per_task=2)
    >>> policy = uniform_random_policy(env.action_spec.n)
    >>> result = meta_test(env, policy, episodes=2, episode_length=15)
    >>> result.num_tasks, result.to_dict()["episodes"], result.returns.shape
    (21, 2, torch.Size([21, 2]))
    >>> result.rollout is None  # kept only on request: what the agent did, step by step
    True
    >>> meta_test(env, policy, episodes=2, episode_length=15, keep_rollout=True).rollout.shape
    torch.Size([21, 30])
    """
    env.set_seed(seed)
    exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    with set_exploration_type(exploration):
        rollout = env.rollout(
            episodes * episode_length,
            policy,
            break_when_any_done=False,
            auto_cast_to_device=True,
        )
    tasks = rollout.get("task", None)
    return MetaTestResult(
        per_episode_returns(rollout, episodes).cpu(),
        None if tasks is None else tasks[:, 0].reshape(rollout.shape[0], -1).cpu(),
        rollout.cpu() if keep_rollout else None,
    )
