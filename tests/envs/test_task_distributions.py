"""Named task distributions (issue 20): declared by the families, sampled by the envs, seeded
splits that never overlap where they are declared disjoint, and specs of every new env."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.envs import CheetahVelEnv, GridNaviEnv, candidate_goal_cells, make_env
from torchrl_bamdp.registry import (
    get_task_family,
    register_task_family,
    task_family_names,
    unregister_task_family,
)
from torchrl_bamdp.task_distributions import (
    GRID_DISTRIBUTIONS,
    VELOCITY_INTERVALS,
    TaskDistribution,
    grid_goal_cells,
    heldout_goal_count,
)
from torchrl_bamdp.transforms import ExactGridBelief

GRID_NAMES = [d.name for d in GRID_DISTRIBUTIONS]
CHEETAH_NAMES = list(VELOCITY_INTERVALS)


def _cells(env: GridNaviEnv) -> set[tuple[int, int]]:
    return {tuple(c) for c in env.task_support().long().tolist()}


def _declared_disjoint_pairs(family_name: str) -> list[tuple[str, str]]:
    family = get_task_family(family_name)
    return [(d.name, other) for d in family.task_distributions for other in d.disjoint_from]


def test_families_declare_what_their_envs_implement():
    """The registry's names (config validation, no torch) are exactly the envs' ones."""
    assert get_task_family("gridworld").distribution_names == tuple(GRID_NAMES)
    assert get_task_family("cheetah_vel").distribution_names == tuple(CHEETAH_NAMES)
    for name in task_family_names():
        assert get_task_family(name).distribution_names[0] == "all"
    assert get_task_family("cheetah_dir").distribution_names == ("all",)


# -- GridNavi ---------------------------------------------------------------------------------
@pytest.mark.parametrize("split_seed", range(8))
@pytest.mark.parametrize("grid_size", [3, 5, 7])
def test_heldout_split_is_a_seeded_partition(grid_size, split_seed):
    train = grid_goal_cells(grid_size, "heldout_train", split_seed)
    test = grid_goal_cells(grid_size, "heldout_test", split_seed)
    everything = grid_goal_cells(grid_size)
    assert set(train).isdisjoint(test)
    assert sorted(train + test) == everything
    assert len(test) == heldout_goal_count(grid_size) and len(train) == len(everything) - len(test)
    assert grid_goal_cells(grid_size, "heldout_test", split_seed) == test  # reproducible


def test_heldout_split_on_5x5_is_16_and_5_and_seeds_differ():
    assert len(grid_goal_cells(5, "heldout_train")) == 16
    held = {tuple(grid_goal_cells(5, "heldout_test", seed)) for seed in range(10)}
    assert len(held) > 5  # different split seeds hold out different goals
    # The recorded split of seed 0 (Random.random is stable across Python versions).
    assert grid_goal_cells(5, "heldout_test", 0) == [(0, 2), (1, 2), (2, 4), (3, 3), (4, 0)]


@pytest.mark.parametrize("grid_size", [3, 5, 7])
def test_region_split_is_the_two_rightmost_columns(grid_size):
    train = grid_goal_cells(grid_size, "region_train")
    test = grid_goal_cells(grid_size, "region_test")
    assert set(train).isdisjoint(test)
    assert sorted(train + test) == grid_goal_cells(grid_size)
    assert {x for x, _ in test} == {grid_size - 2, grid_size - 1}
    if grid_size == 5:
        assert (len(train), len(test)) == (11, 10)


@pytest.mark.parametrize("split_seed", [0, 3])
@pytest.mark.parametrize(("a", "b"), _declared_disjoint_pairs("gridworld"))
def test_gridnavi_declared_disjoint_distributions_never_share_a_sampled_goal(a, b, split_seed):
    """On sampled tasks (what training and meta-tests see), not only on the declared sets."""
    generator = torch.Generator().manual_seed(0)
    goals = {}
    for name in (a, b):
        env = GridNaviEnv(num_envs=1, tasks=name, split_seed=split_seed)
        sampled = {tuple(c) for c in env.sample_tasks(2000, generator).long().tolist()}
        assert sampled == _cells(env)  # every goal of the distribution drawn, nothing else
        goals[name] = sampled
    assert goals[a].isdisjoint(goals[b])
    assert get_task_family("gridworld").disjoint(a, b) and get_task_family("gridworld").disjoint(
        b, a
    )


def test_stratified_tasks_cover_the_distribution_exactly():
    env = make_env("gridworld", num_envs=10, tasks="heldout_test", stratified=True, split_seed=2)
    cells = {tuple(c) for c in env.fixed_tasks.long().tolist()}
    assert cells == set(grid_goal_cells(5, "heldout_test", 2))
    task = env.reset()["task"]
    assert {tuple(c) for c in task.long().tolist()} == cells


@pytest.mark.parametrize("tasks", GRID_NAMES)
def test_gridnavi_env_specs(tasks):
    check_env_specs(make_env("gridworld", num_envs=3, tasks=tasks, seed=0), seed=0)


@pytest.mark.parametrize("tasks", ["heldout_test", "region_test"])
def test_exact_belief_with_a_training_prior_and_fallback_env_specs(tasks):
    belief = ExactGridBelief(
        candidates=torch.tensor(grid_goal_cells(5, tasks.replace("test", "train"))),
        fallback=candidate_goal_cells(5),
    )
    check_env_specs(TransformedEnv(make_env(num_envs=3, tasks=tasks, seed=0), belief), seed=0)


def test_bad_names_and_seeds_are_refused_naming_the_declared_ones():
    with pytest.raises(ValueError, match=r"'held' is not a task distribution.*'heldout_test'"):
        make_env("gridworld", num_envs=2, tasks="held")
    with pytest.raises(ValueError, match="GridNaviEnv: tasks='held'"):
        GridNaviEnv(tasks="held")
    with pytest.raises(ValueError, match="split_seed must be an integer >= 0"):
        grid_goal_cells(5, "heldout_test", -1)
    with pytest.raises(ValueError, match=r"declared: \['all'\]"):
        make_env("point_robot_sparse", num_envs=2, tasks="heldout_test")


def test_a_users_family_declares_its_distributions_by_the_same_call():
    family = register_task_family(
        "doc_split_grid",
        "torchrl_bamdp.envs.gridworld:GridNaviEnv",
        task_distributions=(
            TaskDistribution("near", "close goals"),
            TaskDistribution("far", "far goals", disjoint_from=("near",)),
        ),
    )
    try:
        assert family.distribution_names == ("all", "near", "far")
        assert family.disjoint("near", "far") and not family.disjoint("all", "far")
        with pytest.raises(ValueError, match=r"does not declare \(declared: \['near'\]\)"):
            register_task_family(
                "doc_split_bad",
                "torchrl_bamdp.envs.gridworld:GridNaviEnv",
                task_distributions=(TaskDistribution("near", disjoint_from=("nowhere",)),),
            )
    finally:
        unregister_task_family("doc_split_grid")
        unregister_task_family("doc_split_bad")


# -- HalfCheetahVel ---------------------------------------------------------------------------
def test_cheetah_vel_default_distribution_is_unchanged():
    """``all`` draws exactly the original's u * 3 (the tasks of every run before the splits)."""
    env = CheetahVelEnv(num_envs=1)
    tasks = env.sample_tasks(50, torch.Generator().manual_seed(7))
    assert torch.equal(tasks, torch.rand(50, 1, generator=torch.Generator().manual_seed(7)) * 3)


@pytest.mark.parametrize("tasks", CHEETAH_NAMES)
def test_cheetah_vel_samples_its_support_uniformly(tasks):
    env = CheetahVelEnv(num_envs=1, tasks=tasks)
    v = env.sample_tasks(20000, torch.Generator().manual_seed(0)).flatten().double()
    intervals = VELOCITY_INTERVALS[tasks]
    inside = torch.zeros_like(v, dtype=torch.bool)
    for low, high in intervals:
        here = (v >= low) & (v < high)
        inside |= here
        # Uniform over the union: each interval's share is its share of the length.
        share = (high - low) / sum(h - lo for lo, h in intervals)
        assert abs(here.double().mean().item() - share) < 0.02
    assert bool(inside.all())


@pytest.mark.parametrize(("a", "b"), _declared_disjoint_pairs("cheetah_vel"))
def test_cheetah_vel_declared_disjoint_distributions_never_share_a_target(a, b):
    generator = torch.Generator().manual_seed(1)
    va = CheetahVelEnv(num_envs=1, tasks=a).sample_tasks(20000, generator).flatten()
    vb = CheetahVelEnv(num_envs=1, tasks=b).sample_tasks(20000, generator).flatten()
    for values, other in ((va, b), (vb, a)):  # no sample inside the other's support
        for low, high in VELOCITY_INTERVALS[other]:
            assert not bool(((values >= low) & (values < high)).any())
    assert not set(va.tolist()) & set(vb.tolist())


@pytest.mark.parametrize("tasks", ["extrapolation_test", "gap_train", "gap_test"])
def test_cheetah_vel_env_specs(tasks):
    env = make_env("cheetah_vel", num_envs=2, episode_length=5, episodes_per_task=2, tasks=tasks)
    try:
        check_env_specs(env, seed=0)
        low, high = VELOCITY_INTERVALS[tasks][0][0], VELOCITY_INTERVALS[tasks][-1][1]
        task = env.reset()["task"]
        assert bool(((task >= low) & (task < high)).all())
    finally:
        env.close()


def test_cheetah_vel_workers_rebuild_with_the_distribution():
    """Worker processes rebuild the family from these kwargs (tasks are drawn in this process;
    the workers' own copies hold the same distribution)."""
    env = CheetahVelEnv(num_envs=2, tasks="gap_test")
    assert CheetahVelEnv(num_envs=1, **env._worker_kwargs()).task_distribution == "gap_test"
