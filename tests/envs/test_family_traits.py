"""What a task family is, it declares (issue 16, item 2): the reward decoder that suits it, a
finite task set, its own config options and figures, through its registration or its env,
never inferred from its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.registry import get_task_family, register_task_family, unregister_task_family
from torchrl_bamdp.trainers.agents import build_agent

FAMILIES = Path(__file__).resolve().parents[1] / "user_families"
SMALL = {"num_envs": 4, "episode_length": 8, "episodes_per_task": 2}


@pytest.fixture
def windy(monkeypatch):
    monkeypatch.syspath_prepend(str(FAMILIES))
    from windy_grid import make_env

    yield make_env
    unregister_task_family("windy_traits")


def test_shipped_families_declare_their_traits():
    grid = get_task_family("gridworld")
    assert grid.reward_decoder == "grid_cells"
    assert grid.options == ("grid_size", "observation", "image_size")  # pixels: issue 20
    assert grid.num_tasks({"grid_size": 7}) == 45 and "belief_heatmap" in grid.figures
    assert get_task_family("cheetah_dir").num_tasks({}) == 2
    assert get_task_family("cheetah_vel").num_tasks({}) is None
    assert get_task_family("cheetah_vel").options == ("workers",)
    assert get_task_family("point_robot_sparse").options == ("observation", "image_size")


def test_auto_values_follow_the_declaration_not_the_name(windy):
    register_task_family("windy_traits", windy, finite_tasks=16, figures=())
    config = load_config({"env": {"name": "windy_traits", **SMALL}, "train": {"eval_tasks": 32}})
    assert config.reward_decoder == "mse"  # declared default, although it is a grid
    assert config.num_finite_tasks == 16 and config.eval_stratified
    assert not config.has_figure("belief_heatmap")
    with pytest.raises(ConfigError, match=r"train.eval_tasks \(24\) must be a multiple of the 16"):
        load_config({"env": {"name": "windy_traits", **SMALL}, "train": {"eval_tasks": 24}})


def test_a_family_takes_only_the_options_it_declares(windy):
    register_task_family("windy_traits", windy)
    with pytest.raises(ConfigError, match="env.grid_size is a GridNavi option, not one of"):
        load_config({"env": {"name": "windy_traits", "grid_size": 7, **SMALL}})
    with pytest.raises(
        ConfigError,
        match=r"env.workers is a MuJoCo option.*options: \['observation', 'image_size'\]",
    ):
        load_config({"env": {"name": "point_robot_sparse", "workers": 2}})
    with pytest.raises(ConfigError, match="algo.decoders.reward='grid_cells' needs a task family"):
        load_config(
            {
                "env": {"name": "windy_traits", **SMALL},
                "algo": {"decoders": {"reward": "grid_cells"}},
            }
        )


def test_bad_declarations_name_the_trait(windy):
    with pytest.raises(ValueError, match="reward_decoder of task family 'windy_traits'"):
        register_task_family("windy_traits", windy, reward_decoder="bernoulli")
    with pytest.raises(ValueError, match="options of task family 'windy_traits'"):
        register_task_family("windy_traits", windy, options=("size",))
    with pytest.raises(ValueError, match="finite_tasks of task family 'windy_traits'"):
        register_task_family("windy_traits", windy, finite_tasks=0)
    with pytest.raises(ValueError, match="figures of task family 'windy_traits'"):
        register_task_family("windy_traits", windy, figures=("heatmap",))


def _by_path(**train):
    return load_config(
        {
            "env": {"name": "windy", "factory": "windy_grid:make_env", **SMALL},
            "train": {"eval_tasks": 16, **train},
        }
    )


def test_a_family_by_import_path_declares_its_task_set_when_built(windy):
    """train.eval_stratified=true on a family by import path: checked against the built env's
    task_support() (was a TypeError in load_config: `eval_tasks % None`)."""
    config = _by_path(eval_stratified=True)
    assert config.num_finite_tasks is None and config.eval_stratified
    env = make_env_from_config(config.env, seed=0)
    build_agent(config, env)  # the windy grid lists its 16 tasks
    bad = _by_path(eval_stratified=True, eval_tasks=15)
    with pytest.raises(ConfigError, match=r"train.eval_tasks \(15\) must be a multiple of the 16"):
        build_agent(bad, make_env_from_config(bad.env, seed=0))


def test_stratified_needs_a_declared_task_set(windy, monkeypatch):
    import windy_grid

    monkeypatch.setattr(windy_grid.WindyGridEnv, "task_support", lambda self: None)
    config = _by_path(eval_stratified=True)
    with pytest.raises(ConfigError, match="train.eval_stratified=true needs a finite task set"):
        build_agent(config, make_env_from_config(config.env, seed=0))
