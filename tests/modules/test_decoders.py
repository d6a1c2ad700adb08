"""Decoders: output shapes and NLL values against hand-set weights."""

from __future__ import annotations

import math

import pytest
import torch

from torchrl_bamdp.modules import (
    GridCellRewardDecoder,
    RewardDecoder,
    StateDecoder,
    TaskDecoder,
    TransitionBatch,
)

N, TE, T, L = 2, 3, 4, 5


def _batch(discrete: bool = True, task: bool = True) -> TransitionBatch:
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 5, (N, T, 2), generator=g).float()
    next_obs = torch.randint(0, 5, (N, T, 2), generator=g).float()
    if discrete:
        action = torch.randint(0, 5, (N, T), generator=g)
    else:
        action = torch.randn(N, T, 2, generator=g)
    reward = torch.where(torch.rand(N, T, 1, generator=g) < 0.5, 1.0, -0.1)
    return TransitionBatch(
        obs, action, next_obs, reward, task=torch.randn(N, 2, generator=g) if task else None
    )


def _bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


def test_transition_batch_select_steps():
    b = _batch()
    assert not hasattr(b, "valid_next_obs")  # every next_obs is the true s_{t+1}: no mask
    idx = torch.tensor([1, 3])
    s = b.select_steps(idx)
    torch.testing.assert_close(s.next_obs, b.next_obs[:, idx])
    torch.testing.assert_close(s.reward, b.reward[:, idx])
    torch.testing.assert_close(s.action, b.action[:, idx])
    assert s.task is b.task


def test_output_shapes():
    torch.manual_seed(0)
    latent = torch.randn(N, TE, L)
    b = _batch()
    grid = GridCellRewardDecoder(L, grid_size=5)
    assert grid.nll(latent, b).shape == (N, TE, T)
    assert grid.logits(latent).shape == (N, TE, 25)
    probs = grid.probabilities(torch.randn(7, L))
    assert probs.shape == (7, 25) and ((probs > 0) & (probs < 1)).all()
    rew = RewardDecoder(L, obs_dim=2, action_dim=5, discrete_actions=True)
    assert rew.predict(latent, b).shape == (N, TE, T, 1)
    assert rew.nll(latent, b).shape == (N, TE, T)
    rew_c = RewardDecoder(L, obs_dim=2, action_dim=2, use_obs=False)
    assert rew_c.nll(latent, _batch(discrete=False)).shape == (N, TE, T)
    state = StateDecoder(L, obs_dim=2, action_dim=5, discrete_actions=True)
    assert state.nll(latent, b).shape == (N, TE, T)
    task = TaskDecoder(L, task_dim=2)
    assert task.nll(latent, b).shape == (N, TE)


def test_grid_cell_decoder_nll_by_hand():
    torch.manual_seed(1)
    dec = GridCellRewardDecoder(L, grid_size=5)
    latent = torch.randn(N, TE, L)
    b = _batch()
    nll = dec.nll(latent, b)
    logits = dec.net(latent)
    for n in range(N):
        for te in range(TE):
            for t in range(T):
                x, y = b.next_obs[n, t].long().tolist()
                logit = logits[n, te, x * 5 + y].item()
                target = 1.0 if b.reward[n, t, 0] > 0 else 0.0
                assert nll[n, te, t].item() == pytest.approx(_bce(logit, target), rel=1e-5)


def test_grid_cell_decoder_threshold_and_cell_layout():
    dec = GridCellRewardDecoder(1, grid_size=5, goal_threshold=0.5)
    with torch.no_grad():
        dec.net[0].weight.zero_()
        dec.net[0].bias.copy_(torch.arange(25, dtype=torch.float32) / 10 - 1)
    # Cell (x, y) = (2, 3) is index 13 -> logit 0.3; reward 0.4 is below the threshold.
    b = TransitionBatch(
        torch.zeros(1, 2, 2),
        torch.zeros(1, 2, dtype=torch.long),
        torch.tensor([[[2.0, 3.0], [3.0, 2.0]]]),
        torch.tensor([[[0.4], [0.6]]]),
    )
    nll = dec.nll(torch.zeros(1, 1, 1), b)[0, 0]
    assert nll[0].item() == pytest.approx(_bce(0.3, 0.0), rel=1e-5)
    assert nll[1].item() == pytest.approx(_bce(0.7, 1.0), rel=1e-5)  # index 17


def test_reward_decoder_squared_error_by_hand():
    # Linear head on [m (2), next_obs (2), obs (2), one_hot(action) (3)].
    dec = RewardDecoder(2, obs_dim=2, action_dim=3, hidden=(), discrete_actions=True)
    with torch.no_grad():
        dec.net[0].weight.copy_(torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, -1.0, 0.0, 0.0, 3.0]]))
        dec.net[0].bias.fill_(0.5)
    b = TransitionBatch(
        obs=torch.tensor([[[0.0, 1.0], [2.0, 2.0]]]),
        action=torch.tensor([[2, 0]]),
        next_obs=torch.tensor([[[1.0, 0.0], [4.0, 1.0]]]),
        reward=torch.tensor([[[1.0], [-0.1]]]),
    )
    latent = torch.tensor([[[0.25, 9.0], [-1.0, 9.0]]])  # [1, 2, 2]
    nll = dec.nll(latent, b)
    for te, m0 in enumerate((0.25, -1.0)):
        # pred = m0 + 2 * next_x - obs_y + 3 * [a == 2] + 0.5
        pred0 = m0 + 2 * 1.0 - 1.0 + 3.0 + 0.5
        pred1 = m0 + 2 * 4.0 - 2.0 + 0.0 + 0.5
        assert nll[0, te, 0].item() == pytest.approx((pred0 - 1.0) ** 2)
        assert nll[0, te, 1].item() == pytest.approx((pred1 + 0.1) ** 2)


def test_state_decoder_decodes_every_step_by_hand():
    torch.manual_seed(2)
    dec = StateDecoder(L, obs_dim=2, action_dim=5, discrete_actions=True, hidden=())
    with torch.no_grad():
        dec.net[0].weight.zero_()
        dec.net[0].bias.copy_(torch.tensor([1.0, -1.0]))
    b = _batch()
    nll = dec.nll(torch.randn(N, TE, L), b)
    # prediction (1, -1) everywhere; summed over the 2 dimensions, no step masked
    expected = (1.0 - b.next_obs[..., 0]) ** 2 + (-1.0 - b.next_obs[..., 1]) ** 2
    torch.testing.assert_close(nll, expected[:, None].expand(N, TE, T))


def test_task_decoder_by_hand_and_missing_task():
    dec = TaskDecoder(2, task_dim=2, hidden=())
    with torch.no_grad():
        dec.net[0].weight.copy_(torch.eye(2))
        dec.net[0].bias.zero_()
    b = _batch()
    latent = torch.randn(N, TE, 2)
    expected = ((latent - b.task[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(dec.nll(latent, b), expected)
    with pytest.raises(KeyError, match="task"):
        dec.nll(latent, _batch(task=False))


def test_grid_decoder_reads_the_true_landing_cell_on_the_last_step_of_an_episode():
    """next_obs is the cell the step landed in (the true terminal cell at an episode end), so
    the decoder reads it directly: no copy of GridNavi's moves."""
    dec = GridCellRewardDecoder(1, grid_size=5)
    assert "moves" not in dict(dec.named_buffers()) and not hasattr(dec, "landing_cells")
    obs = torch.tensor([[[3.0, 2.0], [4.0, 4.0], [0.0, 0.0]]])  # s_t
    action = torch.tensor([[2, 1, 4]])  # right -> (4, 2); up at the top wall -> (4, 4); left
    landed = torch.tensor([[[4.0, 2.0], [4.0, 4.0], [0.0, 0.0]]])  # true s_{t+1}
    batch = TransitionBatch(obs, action, landed, torch.tensor([[[1.0], [-0.1], [-0.1]]]))
    with torch.no_grad():
        dec.net[-1].weight.zero_()
        dec.net[-1].bias.copy_(torch.arange(25, dtype=torch.float32) / 10)
    nll = dec.nll(torch.zeros(1, 1, 1), batch)[0, 0]
    # the goal reward of step 0 is credited to cell (4, 2) = index 22 (logit 2.2): -log sigmoid
    assert nll[0].item() == pytest.approx(_bce(2.2, 1.0), rel=1e-6)
    assert nll[1].item() == pytest.approx(_bce(2.4, 0.0), rel=1e-6)  # (4, 4) = 24
    assert nll[2].item() == pytest.approx(_bce(0.0, 0.0), rel=1e-6)


# -- mse_reduction -------------------------------------------------------------------------------
def _constant_state_decoder(mse_reduction: str) -> StateDecoder:
    dec = StateDecoder(
        1, obs_dim=3, action_dim=2, hidden=(), discrete_actions=True, mse_reduction=mse_reduction
    )
    with torch.no_grad():
        dec.net[0].weight.zero_()
        dec.net[0].bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    return dec


def test_mse_reduction_sum_and_mean_over_dimensions_by_hand():
    # One transition, s_{t+1} = (0, 0, 0), prediction (1, 2, 3): squared errors 1, 4, 9.
    b = TransitionBatch(
        torch.zeros(1, 1, 3),
        torch.zeros(1, 1, dtype=torch.long),
        torch.zeros(1, 1, 3),
        torch.zeros(1, 1, 1),
        task=torch.zeros(1, 3),
    )
    latent = torch.zeros(1, 1, 1)
    assert _constant_state_decoder("sum").nll(latent, b).item() == pytest.approx(14.0)
    assert _constant_state_decoder("mean").nll(latent, b).item() == pytest.approx(14.0 / 3)
    for reduction, expected in (("sum", 14.0), ("mean", 14.0 / 3)):
        task = TaskDecoder(1, task_dim=3, hidden=(), mse_reduction=reduction)
        with torch.no_grad():
            task.net[0].weight.zero_()
            task.net[0].bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
        assert task.nll(latent, b).item() == pytest.approx(expected)
    # A scalar reward: both reductions agree.
    b.reward = torch.full((1, 1, 1), 3.0)
    values = []
    for reduction in ("sum", "mean"):
        rew = RewardDecoder(1, 3, 2, hidden=(), discrete_actions=True, mse_reduction=reduction)
        with torch.no_grad():
            rew.net[0].weight.zero_()
            rew.net[0].bias.fill_(1.0)
        values.append(rew.nll(latent, b).item())
    assert values == pytest.approx([4.0, 4.0])


@pytest.mark.parametrize(
    "make",
    [
        lambda r: RewardDecoder(2, 2, 2, mse_reduction=r),
        lambda r: StateDecoder(2, 2, 2, mse_reduction=r),
        lambda r: TaskDecoder(2, 2, mse_reduction=r),
    ],
)
def test_mse_reduction_is_validated(make):
    with pytest.raises(ValueError, match=r"mse_reduction must be one of \('sum', 'mean'\)"):
        make("avg")
    assert make("mean").mse_reduction == "mean"
