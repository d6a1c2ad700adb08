"""``env.observation`` / ``env.image_size`` and ``algo.cnn`` (issue 20, item 3): invalid values
and combinations fail before anything runs, naming the field and what is allowed."""

from __future__ import annotations

import pytest

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.configs.schema import PIXEL_ALGOS

PIXELS = {"observation": "pixels"}


def test_pixel_defaults_resolve():
    config = load_config({"env": PIXELS})
    assert config.env.image_size == 32
    assert config.algo.cnn.policy == "shared"
    assert config.reward_decoder == "grid_cells" and config.policy_belief == "decoded"
    # The same GridNavi tuning as the state task (tuning/gridworld.yaml).
    state = load_config({})
    assert config.algo.ppo == state.algo.ppo and config.algo.elbo == state.algo.elbo
    robot = load_config({"env": {"name": "point_robot_sparse", **PIXELS, "image_size": 48}})
    assert robot.env.image_size == 48 and robot.reward_decoder == "mse"
    # The oracle has no encoder to share a CNN with: its file picks its own.
    assert compose_config(["algo=oracle", "env.observation=pixels"]).algo.cnn.policy == "separate"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"env": {"observation": "rgb"}},
            r"config.env.observation must be one of \['state', 'pixels'\]",
        ),
        (
            {"env": {"image_size": 32}},
            r"config.env.image_size is the side of the frames of .*pixels",
        ),
        ({"env": {**PIXELS, "image_size": 6}}, r"config.env.image_size must be >= 8 \(got 6\)"),
        ({"env": {**PIXELS, "grid_size": 7, "image_size": 12}}, r"image_size must be >= 2 x"),
        (
            {"env": {"name": "cheetah_vel", **PIXELS}},
            r"env.name='cheetah_vel' renders no frames \(the families that do: \['gridworld', "
            r"'point_robot_sparse', 'point_robot_dense'\]\)",
        ),
        (
            {"env": PIXELS, "algo": {"cnn": {"policy": "both"}}},
            r"config.algo.cnn.policy must be one of \['separate', 'shared'\] \(got 'both'\)",
        ),
        (
            {"env": PIXELS, "algo": {"cnn": {"channels": [8], "strides": [4, 2]}}},
            "one entry per convolution",
        ),
        (
            {"env": {**PIXELS, "image_size": 10}, "algo": {"cnn": {"strides": [4, 4]}}},
            "leave nothing of env.image_size=10 frames",
        ),
        (
            {"env": PIXELS, "algo": {"cnn": {"features": 0}}},
            r"config.algo.cnn.features must be >= 1",
        ),
        (
            {"env": PIXELS, "algo": {"name": "oracle", "cnn": {"policy": "shared"}}},
            r"algo.name='oracle' has no belief encoder: use algo.cnn.policy='separate'",
        ),
    ],
)
def test_invalid_pixel_settings_fail_naming_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


@pytest.mark.parametrize(
    "algo", ["rl2", "rl2_original", "belief_oracle", "bayes_optimal", "varibad_original"]
)
def test_algorithms_that_read_state_vectors_are_refused(algo):
    overrides = [f"algo={algo}", "env.observation=pixels"]
    with pytest.raises(ConfigError, match=r"needs an algorithm that embeds frames, algo.name in"):
        compose_config(overrides)
    assert set(PIXEL_ALGOS) == {"varibad", "oracle", "random"}


def test_state_decoder_is_refused_on_pixels():
    data = {"env": PIXELS, "algo": {"decoders": {"state": True}}}
    with pytest.raises(
        ConfigError, match="algo.decoders.state=true would reconstruct the next frame"
    ):
        load_config(data)
    # The task decoder reconstructs the task, not the frames: allowed.
    load_config({"env": PIXELS, "algo": {"decoders": {"task": True}}})


@pytest.mark.parametrize(
    "field",
    [("encoder", "done_input", True), ("decoders", "done_input", True), ("ppo", "input_embed", 16)],
)
def test_state_vector_options_are_refused_on_pixels(field):
    section, name, value = field
    with pytest.raises(ConfigError, match=f"algo.{section}.{name}={value!r} is an option of"):
        load_config({"env": PIXELS, "algo": {section: {name: value}}})
