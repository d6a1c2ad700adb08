"""Pixel variants of GridNavi and the point robot (issue 20, item 3): specs, rendering against
positions (exactly), the same task and rewards as the state envs, and a sync-free step."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.envs import GridNaviEnv, PointRobotEnv, make_env, make_env_from_config
from torchrl_bamdp.envs.pixels import AGENT_COLOUR, GridRenderer, PointRenderer
from torchrl_bamdp.host_sync import HostSyncCounter
from torchrl_bamdp.trainers.agents import build_agent

PIXEL_FAMILIES = ["gridworld", "point_robot_sparse", "point_robot_dense"]


@pytest.mark.parametrize("name", PIXEL_FAMILIES)
def test_specs_of_every_pixel_env(name):
    task_env = make_env(name, num_envs=3, episode_length=5, observation="pixels").task_env
    check_env_specs(task_env, seed=0)
    for image_size in (32, 20):
        env = make_env(
            name, num_envs=3, episode_length=5, seed=0, observation="pixels", image_size=image_size
        )
        check_env_specs(env, seed=0)
        spec = env.observation_spec
        for key in ("observation", "true_observation"):
            assert spec[key].shape == (3, 3, image_size, image_size), key
            assert spec[key].dtype == torch.uint8, key


@pytest.mark.parametrize(("grid_size", "image_size"), [(5, 32), (3, 11), (7, 64)])
def test_gridnavi_lights_exactly_the_agents_cell(grid_size, image_size):
    renderer = GridRenderer(grid_size, image_size)
    cell = image_size // grid_size
    margin = (image_size - cell * grid_size) // 2
    xs, ys = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    positions = torch.stack([xs.flatten(), ys.flatten()], -1)  # every cell, batched
    frames = renderer.render(positions)
    assert frames.shape == (grid_size**2, 3, image_size, image_size)
    for frame, (x, y) in zip(frames, positions.tolist(), strict=True):
        # Column x from the left, row y from the bottom; the inside of the cell, no border.
        left = margin + x * cell + 1
        top = margin + (grid_size - 1 - y) * cell + 1
        expected = torch.zeros(image_size, image_size, dtype=torch.bool)
        expected[top : top + cell - 1, left : left + cell - 1] = True
        lit = frame[0] >= 128
        assert torch.equal(lit, expected), (x, y)
        colour = torch.tensor(AGENT_COLOUR, dtype=torch.uint8).unsqueeze(-1)
        assert (frame[:, lit] == colour).all()
    # The inverse is exact, and so is the flat cell index the per-cell decoder reads.
    assert torch.equal(renderer.positions(frames), positions)
    assert torch.equal(renderer.cells(frames), positions[:, 0] * grid_size + positions[:, 1])


def test_gridnavi_frames_never_show_the_goal():
    env = GridNaviEnv(num_envs=21, observation="pixels")
    td = env.reset(env.reset().set("task", env.task_support()))
    frames = td["observation"]
    assert torch.equal(frames, frames[:1].expand_as(frames))  # 21 goals, one start frame
    td["action"] = torch.full((21,), 2)  # right: everyone to (1, 0)
    frames = env.step(td)["next", "observation"]
    assert torch.equal(frames, frames[:1].expand_as(frames))


@pytest.mark.parametrize("view_radius", [1.5, 2.0])
def test_point_robot_lit_pixel_matches_the_position_mapping(view_radius):
    size = 32
    renderer = PointRenderer(size, view_radius)
    step = 2 * view_radius / size
    # Positions at pixel centres: one pixel at full intensity, where the mapping says.
    cols = torch.tensor([0, 5, 16, 31])
    rows = torch.tensor([31, 0, 9, 16])
    centres = torch.stack(
        [-view_radius + (cols + 0.5) * step, view_radius - (rows + 0.5) * step], -1
    )
    frames = renderer.render(centres)
    for frame, row, col in zip(frames, rows.tolist(), cols.tolist(), strict=True):
        lit = (frame[0] > 0).nonzero().tolist()
        assert lit == [[row, col]]
        assert frame[:, row, col].tolist() == list(AGENT_COLOUR[:2]) + [0]
    # Anywhere in the view: the intensity-weighted centre is the mapped (u, v), and the inverse
    # returns the position, both to within the 8-bit rounding of the weights.
    position = torch.rand(256, 2, generator=torch.Generator().manual_seed(0)) * 2.8 - 1.4
    position = position * view_radius / 1.5
    frames = renderer.render(position)
    weight = frames[:, 0].float()
    pixels = torch.arange(size, dtype=torch.float32)
    u = (weight.sum(-2) * pixels).sum(-1) / weight.sum((-2, -1))
    v = (weight.sum(-1) * pixels).sum(-1) / weight.sum((-2, -1))
    uv = renderer.pixel_coordinates(position)
    assert torch.allclose(torch.stack([u, v], -1), uv, atol=0.01)
    assert torch.allclose(renderer.positions(frames), position, atol=0.01 * step)
    assert ((frames[:, 0] > 0).sum((-2, -1)) <= 4).all()  # a bilinear splat: 4 pixels at most
    # Outside the view the robot is drawn on its edge.
    edge = renderer.render(torch.tensor([[9.0, 0.0]]))[0, 0]
    assert edge[:, -1].sum() > 0 and edge[:, :-1].sum() == 0


@pytest.mark.parametrize("name", PIXEL_FAMILIES)
def test_pixel_env_has_the_state_envs_tasks_and_rewards(name):
    """Same seed, same actions: the same tasks and rewards, and the frames show the states."""
    rollouts = []
    for observation in ("state", "pixels"):
        env = make_env(
            name, num_envs=6, episode_length=8, episodes_per_task=2, seed=3, observation=observation
        )
        env.set_seed(3)
        torch.manual_seed(0)
        rollouts.append((env, env.rollout(env.horizon, break_when_any_done=False)))
    (_, state), (pixel_env, pixels) = rollouts
    for key in ("task", "action", ("next", "reward"), ("next", "episode_done"), ("next", "done")):
        assert torch.equal(state[key], pixels[key]), key
    read_back = pixel_env.task_env.positions_of(pixels["next", "true_observation"])
    if name == "gridworld":
        assert torch.equal(read_back, state["next", "true_observation"].long())
    else:  # the robot stays well inside the view in 16 random steps
        step = 2 * 1.5 / 32
        assert torch.allclose(read_back, state["next", "true_observation"], atol=0.01 * step)


@pytest.mark.parametrize("num_envs", [32, 5])
def test_inner_reset_shows_the_start_frame_in_every_env(num_envs):
    """The inner-episode restart writes frames per env (a [B, 1] mask against [B, 3, S, S]
    frames once broadcast over the wrong dims when B == S)."""
    env = make_env("gridworld", num_envs=num_envs, seed=0, observation="pixels")
    rollout = env.rollout(env.horizon, break_when_any_done=False)
    ends = rollout["next", "episode_done"][..., 0] & ~rollout["next", "done"][..., 0]
    start = env.task_env.renderer.render(torch.zeros(2, dtype=torch.long))
    assert ends.sum() == 3 * num_envs
    assert (rollout["next", "observation"][ends] == start).all()
    # The true last frame is kept: where the agent really was.
    true_cells = env.task_env.positions_of(rollout["next", "true_observation"][ends])
    assert (true_cells != 0).any()


def test_pixel_options_are_checked_with_a_clear_message():
    with pytest.raises(ValueError, match=r"observation must be one of \['state', 'pixels'\]"):
        GridNaviEnv(observation="rgb")
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        PointRobotEnv(observation="pixels", image_size=4)
    with pytest.raises(ValueError, match="image_size .* must be >= 2 \\* grid_size"):
        GridNaviEnv(grid_size=7, observation="pixels", image_size=12)
    with pytest.raises(ValueError, match="observation and image_size are options"):
        make_env("cheetah_vel", num_envs=1, observation="pixels")


@pytest.mark.parametrize(
    ("name", "policy"),
    [("gridworld", "separate"), ("gridworld", "shared"), ("point_robot_sparse", "shared")],
)
def test_pixel_step_path_has_no_host_sync(name, policy):
    """Rendering, the CNN belief update and the acting policy issue no host sync of ours in a
    sync-free env (``check_actions="shape"``)."""
    env_cfg = {"name": name, "num_envs": 8, "sync_free": True, "check_actions": "shape"}
    env_cfg["observation"] = "pixels"
    cfg = load_config({"env": env_cfg, "algo": {"cnn": {"policy": policy}}})
    base = make_env_from_config(cfg.env, seed=0, episode_length=5)
    cfg.env.episode_length = 5
    agent = build_agent(cfg, base)
    env, policy_module = agent.transformed_env(base), agent.acting_policy
    with torch.no_grad():
        env.rollout(2, policy_module, break_when_any_done=False)
        with HostSyncCounter() as counter:
            # Past inner-episode restarts and a reset to new tasks.
            env.rollout(3 * env.horizon // 2, policy_module, break_when_any_done=False)
    if name == "gridworld":
        assert counter.inside == 0, counter.report()
    else:  # TorchRL's TanhNormal checks its bounds once per step (tests/test_host_sync.py)
        ours = [site for site in counter.syncs if "(outside)" not in site]
        assert all("torchrl/modules/distributions" in site for site in ours), counter.report()
