"""TrajectoryBuffer: whole BAMDP trajectories cut from collector batches, FIFO, padding, state."""

from __future__ import annotations

import io

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector

from torchrl_bamdp.data import DEFAULT_TRAJECTORY_KEYS, TrajectoryBuffer
from torchrl_bamdp.envs import make_env

KEYS = ["step", "env_id", ("next", "done")]


def synthetic_batch(steps: torch.Tensor, dones: torch.Tensor, env_ids=None) -> TensorDict:
    """A ``[num_envs, T]`` batch: ``step`` = global step index, ``env_id`` = which env."""
    num_envs, t = steps.shape
    if env_ids is None:
        env_ids = torch.arange(num_envs)
    return TensorDict(
        {
            "step": steps.unsqueeze(-1).float(),
            "env_id": env_ids.view(-1, 1, 1).expand(num_envs, t, 1).clone().float(),
            "next": {"done": dones.unsqueeze(-1)},
        },
        [num_envs, t],
    )


def stream(num_envs: int, total: int, done_at: dict[int, list[int]], chunk: int):
    """Collector-like batches of ``chunk`` steps; env ``e`` is done at global steps done_at[e]."""
    dones = torch.zeros(num_envs, total, dtype=torch.bool)
    for env, steps in done_at.items():
        dones[env, steps] = True
    steps = torch.arange(total).expand(num_envs, total)
    return [
        synthetic_batch(steps[:, s : s + chunk], dones[:, s : s + chunk])
        for s in range(0, total, chunk)
    ]


def stored(buf: TrajectoryBuffer) -> TensorDict:
    state = buf.state_dict()
    assert state["trajectories"] is not None
    return state["trajectories"]


def as_list(td: TensorDict, key) -> list:
    return td.get(key).squeeze(-1).tolist()


# -- reassembly --------------------------------------------------------------------------------
def test_trajectories_spanning_batches_are_reassembled_in_order():
    horizon = 6
    buf = TrajectoryBuffer(capacity=100, horizon=horizon, keys=KEYS)
    # env 0: two full tasks ending at steps 5 and 11 (both cut by the 4-step batches);
    # env 1: a short task ending at step 2, then a full one ending at step 8, then a tail.
    batches = stream(2, 12, {0: [5, 11], 1: [2, 8]}, chunk=4)
    added = [buf.extend_from_batch(b) for b in batches]
    assert added == [1, 1, 2]
    assert len(buf) == 4 and buf.num_added == 4

    trajs = stored(buf)
    assert trajs.batch_size == torch.Size([4, horizon])
    # storage order: completion order, envs in index order within a batch
    assert as_list(trajs, "env_id") == [[1.0] * 3 + [0.0] * 3, [0.0] * 6, [0.0] * 6, [1.0] * 6]
    valid = trajs["valid"].tolist()
    steps = as_list(trajs, "step")
    assert steps[0][:3] == [0, 1, 2] and valid[0] == [True] * 3 + [False] * 3
    assert steps[1] == [0, 1, 2, 3, 4, 5] and all(valid[1])
    assert steps[2] == [6, 7, 8, 9, 10, 11] and all(valid[2])
    assert steps[3] == [3, 4, 5, 6, 7, 8] and all(valid[3])
    # each trajectory ends with its done and has no other done among its valid steps
    done = trajs["next", "done"].squeeze(-1)
    for i, n in enumerate([3, 6, 6, 6]):
        assert done[i, n - 1] and not done[i, : n - 1].any()


def test_trajectory_spanning_three_batches():
    buf = TrajectoryBuffer(capacity=10, horizon=10, keys=KEYS)
    for b in stream(1, 10, {0: [9]}, chunk=3):  # chunks of 3, 3, 3, 1
        buf.extend_from_batch(b)
    assert len(buf) == 1
    assert as_list(stored(buf), "step") == [list(map(float, range(10)))]


def test_real_collector_batches():
    """Collector batches cutting BAMDPs in half are glued back into the true trajectories."""
    torch.manual_seed(0)
    env = make_env("gridworld", num_envs=2, episode_length=3, episodes_per_task=2, seed=0)
    horizon = env.horizon
    assert horizon == 6
    collector = Collector(
        env,
        None,
        frames_per_batch=2 * 4,
        total_frames=2 * 12,
        auto_register_policy_transforms=False,
    )
    buf = TrajectoryBuffer(capacity=50, horizon=horizon)
    batches = []
    try:
        for batch in collector:
            assert batch.batch_size == torch.Size([2, 4])
            batches.append(batch.clone())
            buf.extend_from_batch(batch)
    finally:
        collector.shutdown()
    full = torch.cat(batches, dim=1)  # [2, 12]: two whole tasks per env
    assert len(buf) == 4
    trajs = stored(buf)
    expected = [full[0, 0:6], full[1, 0:6], full[0, 6:12], full[1, 6:12]]
    for i, exp in enumerate(expected):
        got = trajs[i]
        assert got["valid"].all()
        for key in DEFAULT_TRAJECTORY_KEYS:
            torch.testing.assert_close(got[key], exp[key], rtol=0, atol=0)
        # one task per trajectory, inner episodes 0 then 1
        assert (got["task"] == got["task"][0]).all()
        assert got["next", "done"].squeeze(-1).tolist() == [False] * 5 + [True]
    # the stored keys are exactly the ELBO's (no belief, no hidden state) plus "valid"
    stored_keys = set(trajs.keys(include_nested=True, leaves_only=True))
    assert stored_keys == set(DEFAULT_TRAJECTORY_KEYS) | {"valid"}


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        TrajectoryBuffer(capacity=0, horizon=5)
    with pytest.raises(ValueError):
        TrajectoryBuffer(capacity=5, horizon=0)
    buf = TrajectoryBuffer(capacity=5, horizon=3, keys=KEYS)
    flat = synthetic_batch(torch.arange(3).view(1, 3), torch.zeros(1, 3, dtype=torch.bool))[0]
    with pytest.raises(ValueError):
        buf.extend_from_batch(flat)
    # a trajectory longer than the horizon is an error, not silently truncated
    with pytest.raises(ValueError):
        buf.extend_from_batch(stream(1, 4, {0: [3]}, chunk=4)[0])


# -- capacity ----------------------------------------------------------------------------------
def test_capacity_bound_is_fifo():
    capacity, horizon = 3, 2
    buf = TrajectoryBuffer(capacity=capacity, horizon=horizon, keys=KEYS)
    # one env finishing a 2-step task every 2 steps; batch k holds task k
    total = 0
    for k, b in enumerate(stream(1, 2 * 8, {0: list(range(1, 16, 2))}, chunk=2)):
        total += buf.extend_from_batch(b)
        assert len(buf) == min(k + 1, capacity) <= capacity
    assert total == 8 and buf.num_added == 8
    first_steps = sorted(row[0] for row in as_list(stored(buf), "step"))
    assert first_steps == [10.0, 12.0, 14.0]  # the three most recent tasks
    # sampling never returns an evicted trajectory
    sample = buf.sample(64)
    assert set(sample["step"][:, 0, 0].tolist()) <= {10.0, 12.0, 14.0}


def test_capacity_bound_when_one_batch_overflows():
    buf = TrajectoryBuffer(capacity=4, horizon=2, keys=KEYS)
    done = torch.tensor([[False, True]] * 10)
    added = buf.extend_from_batch(synthetic_batch(torch.arange(2).expand(10, 2), done))
    assert added == 10
    assert len(buf) == 4


# -- sampling ----------------------------------------------------------------------------------
def test_sample_shape_and_reproducibility():
    horizon = 6
    batches = stream(4, 12, {e: [5, 11] for e in range(4)}, chunk=6)

    def filled(seed):
        buf = TrajectoryBuffer(
            capacity=20, horizon=horizon, keys=KEYS, generator=torch.Generator().manual_seed(seed)
        )
        for b in batches:
            buf.extend_from_batch(b)
        return buf

    buf = filled(0)
    assert len(buf) == 8
    sample = buf.sample(5)
    assert sample.batch_size == torch.Size([5, horizon])
    assert sample["step"].shape == (5, horizon, 1)
    assert sample["valid"].shape == (5, horizon) and sample["valid"].all()
    # B larger than the buffer: sampling is with replacement
    assert buf.sample(32).batch_size == torch.Size([32, horizon])
    # same generator seed -> same samples; different seed -> (almost surely) different
    a, b = filled(1).sample(16), filled(1).sample(16)
    assert torch.equal(a["env_id"], b["env_id"]) and torch.equal(a["step"], b["step"])
    c = filled(2).sample(16)
    assert not (torch.equal(a["env_id"], c["env_id"]) and torch.equal(a["step"], c["step"]))


def test_sample_from_empty_raises():
    buf = TrajectoryBuffer(capacity=3, horizon=4, keys=KEYS)
    with pytest.raises(RuntimeError):
        buf.sample(2)
    # an unfinished trajectory does not count
    buf.extend_from_batch(stream(1, 2, {}, chunk=2)[0])
    assert len(buf) == 0
    with pytest.raises(RuntimeError):
        buf.sample(2)


# -- padding -----------------------------------------------------------------------------------
def test_short_trajectories_are_padded_and_masked():
    horizon = 5
    buf = TrajectoryBuffer(capacity=10, horizon=horizon, keys=KEYS)
    steps = torch.tensor([[7, 8, 9, 10, 11], [20, 21, 22, 23, 24]])
    done = torch.tensor([[False, True, False, False, True], [False, False, False, False, True]])
    assert buf.extend_from_batch(synthetic_batch(steps, done)) == 3
    trajs = stored(buf)
    valid = trajs["valid"]
    assert valid.dtype == torch.bool
    assert valid.tolist() == [
        [True, True, False, False, False],
        [True, True, True, False, False],
        [True] * 5,
    ]
    s = as_list(trajs, "step")
    assert s[0] == [7.0, 8.0, 0.0, 0.0, 0.0]  # padded with zeros
    assert s[1] == [9.0, 10.0, 11.0, 0.0, 0.0]
    assert s[2] == [20.0, 21.0, 22.0, 23.0, 24.0]
    # padding holds no "done": only the last valid step is done
    assert trajs["next", "done"].squeeze(-1).sum(-1).tolist() == [1, 1, 1]
    # samples keep the mask
    sample = buf.sample(30)
    n_valid = sample["valid"].sum(-1)
    assert set(n_valid.tolist()) <= {2, 3, 5}
    assert (sample["step"].squeeze(-1)[~sample["valid"]] == 0).all()


# -- state dict --------------------------------------------------------------------------------
def _save_load(state: dict) -> dict:
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f, weights_only=False)


def test_state_dict_round_trip_with_unfinished_tails():
    horizon = 6
    batches = stream(3, 18, {0: [5, 11, 17], 1: [2, 8, 14], 2: [3, 9, 15]}, chunk=4)
    ref = TrajectoryBuffer(
        capacity=5, horizon=horizon, keys=KEYS, generator=torch.Generator().manual_seed(0)
    )
    for b in batches[:2]:  # up to step 7: every env has an unfinished tail
        ref.extend_from_batch(b)
    assert set(ref._partial) == {0, 1, 2}
    state = _save_load(ref.state_dict())

    new = TrajectoryBuffer(
        capacity=5, horizon=horizon, keys=KEYS, generator=torch.Generator().manual_seed(0)
    )
    new.extend_from_batch(stream(1, 6, {0: [5]}, chunk=6)[0])  # content to be replaced
    new.load_state_dict(state)
    assert len(new) == len(ref) and new.num_added == ref.num_added
    assert (stored(new) == stored(ref)).all()

    # the loaded tails are completed by later batches exactly like the originals
    for b in batches[2:]:
        assert new.extend_from_batch(b) == ref.extend_from_batch(b)
    assert len(new) == len(ref) == 5
    assert new.num_added == ref.num_added == 9
    assert (stored(new) == stored(ref)).all()
    # trajectories that started before the checkpoint are whole after it
    kept = {tuple(row) for row in as_list(stored(new), "step")}
    assert (3.0, 4.0, 5.0, 6.0, 7.0, 8.0) in kept
    assert (4.0, 5.0, 6.0, 7.0, 8.0, 9.0) in kept
    assert torch.equal(new.sample(10)["step"], ref.sample(10)["step"])


def test_state_dict_of_empty_buffer():
    buf = TrajectoryBuffer(capacity=3, horizon=4, keys=KEYS)
    buf.extend_from_batch(stream(1, 2, {}, chunk=2)[0])  # only a tail
    state = _save_load(buf.state_dict())
    assert state["trajectories"] is None
    new = TrajectoryBuffer(capacity=3, horizon=4, keys=KEYS)
    new.load_state_dict(state)
    assert len(new) == 0
    new.extend_from_batch(synthetic_batch(torch.tensor([[2, 3]]), torch.tensor([[False, True]])))
    assert len(new) == 1
    assert as_list(stored(new), "step") == [[0.0, 1.0, 2.0, 3.0]]


def test_default_keys_store_the_true_next_state_for_the_elbo():
    from torchrl_bamdp.objectives import ELBOLoss

    assert ("next", "true_observation") in DEFAULT_TRAJECTORY_KEYS
    # The reset observation is the policy's input, never the encoder's: not stored.
    assert ("next", "observation") not in DEFAULT_TRAJECTORY_KEYS
    assert ELBOLoss.default_keys.next_observation in DEFAULT_TRAJECTORY_KEYS


def test_checkpoint_from_before_the_true_observation_resumes():
    """An older buffer state stored ("next", "observation") only; it stands in for the true
    next state, and stored trajectories and tails get this buffer's keys."""
    horizon = 3
    old_keys = ["observation", ("next", "observation"), ("next", "done")]
    old = TrajectoryBuffer(capacity=4, horizon=horizon, keys=old_keys)
    done = torch.tensor([[False, False, True, False]]).unsqueeze(-1)
    nxt = torch.arange(8.0).reshape(1, 4, 2)
    old.extend_from_batch(
        TensorDict(
            {"observation": torch.zeros(1, 4, 2), "next": {"observation": nxt, "done": done}},
            [1, 4],
        )
    )
    state = _save_load(old.state_dict())
    keys = ["observation", ("next", "true_observation"), ("next", "done")]
    new = TrajectoryBuffer(capacity=4, horizon=horizon, keys=keys)
    new.load_state_dict(state)
    trajectories = stored(new)
    assert set(trajectories.keys(True, True)) == set(keys) | {"valid"}
    torch.testing.assert_close(trajectories["next", "true_observation"][0], nxt[0, :3])
    # The unfinished tail is completed by a new batch, which has the new key only.
    assert set(new._partial[0][0].keys(True, True)) == set(keys)
    batch = TensorDict(
        {
            "observation": torch.zeros(1, 2, 2),
            "next": {
                "true_observation": torch.full((1, 2, 2), 9.0),
                "done": torch.tensor([[False, True]]).unsqueeze(-1),
            },
        },
        [1, 2],
    )
    assert new.extend_from_batch(batch) == 1
    last = new.buffer.storage[1]
    assert last["next", "true_observation"][:, 0].tolist() == [6.0, 9.0, 9.0]


def _count_cut_loops(monkeypatch) -> list[int]:
    """A list that grows by one each time a buffer stores a batch through the cut-and-glue loop."""
    calls: list[int] = []
    original_cut = TrajectoryBuffer._extend_cut
    monkeypatch.setattr(
        TrajectoryBuffer, "_extend_cut", lambda self, *a: calls.append(1) or original_cut(self, *a)
    )
    return calls


def test_whole_task_batches_take_the_reshape_and_store_the_same(monkeypatch):
    """Batches of whole tasks end to end (the trainer's) skip the per-env loop; the buffer holds
    exactly what the loop stores: the same trajectories, in the same order, all valid."""
    horizon, num_envs, tasks_per_env = 3, 4, 2
    total = horizon * tasks_per_env
    ends = {env: list(range(horizon - 1, total, horizon)) for env in range(num_envs)}
    (batch,) = stream(num_envs, total, ends, chunk=total)

    fast = TrajectoryBuffer(capacity=20, horizon=horizon, keys=KEYS)
    cut_calls = _count_cut_loops(monkeypatch)
    assert fast.extend_from_batch(batch) == num_envs * tasks_per_env
    assert cut_calls == []  # the reshape, not the loop

    loop = TrajectoryBuffer(capacity=20, horizon=horizon, keys=KEYS)
    done = batch.get(("next", "done")).reshape(batch.shape)
    assert loop._extend_cut(batch.select(*KEYS), done) == num_envs * tasks_per_env
    got, want = stored(fast), stored(loop)
    assert got.batch_size == want.batch_size == torch.Size([num_envs * tasks_per_env, horizon])
    assert set(got.keys(True, True)) == set(want.keys(True, True))
    for key in want.keys(True, True):
        assert torch.equal(got[key], want[key]), key
    # env by env, in time: env 0's two tasks first
    assert got["env_id"][:, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert got["step"][:2, :, 0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert fast.num_added == loop.num_added == 8


@pytest.mark.parametrize("case", ["early_end", "not_a_multiple"])
def test_batches_that_are_not_whole_tasks_are_cut(monkeypatch, case):
    """A task that ends early, or a batch length that is not a multiple of the horizon, goes
    through the cut-and-glue loop, and what it stores is the true trajectories."""
    horizon, num_envs = 3, 2
    if case == "early_end":  # env 1: a 2-step task, then a 3-step one, then a tail
        (batch,) = stream(num_envs, 6, {0: [2, 5], 1: [1, 4]}, chunk=6)
        lengths = [3, 3, 2, 3]
    else:  # 4 steps: one task per env and a 1-step tail each
        (batch,) = stream(num_envs, 4, {0: [2], 1: [2]}, chunk=4)
        lengths = [3, 3]
    buf = TrajectoryBuffer(capacity=20, horizon=horizon, keys=KEYS)
    cut_calls = _count_cut_loops(monkeypatch)
    assert buf.extend_from_batch(batch) == len(lengths)
    assert cut_calls == [1]
    assert stored(buf)["valid"].sum(-1).tolist() == lengths
    assert len(buf._partial) == num_envs - (case == "early_end")


def test_a_pending_tail_is_never_dropped_by_a_whole_task_looking_batch():
    """A tail waits and the next batch looks like whole tasks: gluing them makes a trajectory
    longer than the horizon, which is refused (the reshape would have dropped the tail)."""
    buf = TrajectoryBuffer(capacity=20, horizon=3, keys=KEYS)
    (full,) = stream(1, 4, {0: [3]}, chunk=4)
    assert buf.extend_from_batch(full[:, :1]) == 0  # one step waits
    with pytest.raises(ValueError, match="longer than the BAMDP horizon"):
        buf.extend_from_batch(full[:, 1:])
