"""The task-switching BAMDP in the config: env.switching_hazard and the combinations it refuses."""

from __future__ import annotations

import pytest

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.registry import get_task_family

SWITCHING = {"switching_hazard": 0.05, "episode_length": 200, "episodes_per_task": 1}
CLI = ["env.switching_hazard=0.05", "env.episode_length=200", "env.episodes_per_task=1"]


def test_off_by_default_and_on_from_the_cli() -> None:
    assert load_config({}).env.switching_hazard == 0.0 and not load_config({}).env.switching
    config = compose_config(["algo=varibad_switching", *CLI])
    assert config.env.switching and config.env.horizon == 200
    assert config == load_config({"algo": {"name": "varibad_switching"}, "env": SWITCHING})
    # It reads nothing privileged, whatever the GridNavi tuning gives the other algorithms.
    assert config.algo.ppo.critic_task is False
    assert compose_config(["algo=varibad", *CLI]).algo.ppo.critic_task is True


@pytest.mark.parametrize("hazard", [-0.1, 1.5])
def test_hazard_must_be_a_probability(hazard: float) -> None:
    with pytest.raises(ConfigError, match=r"config\.env\.switching_hazard must be a probability"):
        load_config({"env": {**SWITCHING, "switching_hazard": hazard}})
    with pytest.raises(ConfigError, match="must be a number"):
        load_config({"env": {**SWITCHING, "switching_hazard": "often"}})


def test_refused_combinations_name_the_field() -> None:
    cases = [
        ({"env": {**SWITCHING, "episodes_per_task": 4}}, r"env\.episodes_per_task=1"),
        ({"env": {**SWITCHING, "name": "cheetah_vel"}}, "declares none .switchable families"),
        ({"env": {**SWITCHING, "test_tasks": ["heldout_test"]}}, r"env\.test_tasks"),
        ({"algo": {"name": "bayes_optimal"}, "env": SWITCHING}, "bayes_optimal"),
        ({"algo": {"name": "varibad_switching"}}, r"needs env\.switching_hazard > 0"),
        (
            {"algo": {"name": "varibad_switching", "ppo": {"critic_task": True}}, "env": SWITCHING},
            r"algo\.ppo\.critic_task must be false",
        ),
        (
            {"algo": {"name": "varibad_switching", "decoders": {"task": True}}, "env": SWITCHING},
            r"algo\.decoders\.task must be false",
        ),
        ({"algo": {"elbo": {"decode_window": 10}}}, r"algo\.elbo\.decode_window=10 is an option"),
        (
            {
                "algo": {"name": "varibad_switching", "elbo": {"prior_hazard": 2.0}},
                "env": SWITCHING,
            },
            r"algo\.elbo\.prior_hazard must be null",
        ),
        ({"env": SWITCHING, "train": {"eval_episodes": 4}}, r"train\.eval_episodes=4"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(data)


def test_switchable_is_declared_by_the_registration() -> None:
    assert get_task_family("gridworld").switchable
    assert get_task_family("point_robot_sparse").switchable
    assert not get_task_family("cheetah_vel").switchable
    robot = load_config({"env": {**SWITCHING, "name": "point_robot_dense"}})
    assert robot.env.switching and robot.reward_decoder == "mse"


def test_no_belief_heatmap_on_a_switching_env() -> None:
    config = load_config({"algo": {"name": "varibad_switching"}, "env": SWITCHING})
    assert config.policy_belief == "decoded" and not config.has_figure("belief_heatmap")
