"""ELBOLoss and gaussian_kl against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
from torchrl_bamdp.modules import (
    BeliefEncoder,
    GridCellRewardDecoder,
    RewardDecoder,
    StateDecoder,
    TaskDecoder,
)
from torchrl_bamdp.objectives import ELBOLoss, gaussian_kl


class StubEncoder(nn.Module):
    """Returns fixed posteriors ``[N, T + 1, L]`` and records what it was called with."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("logvar", logvar)
        self.latent_dim = mean.shape[-1]
        self.calls = []

    def sequence(self, actions, rewards, next_obs, hidden=None, with_prior=True):
        self.calls.append((actions, rewards, next_obs))
        n, t1 = self.mean.shape[:2]
        return self.mean, self.logvar, torch.zeros(n, t1, 3)


class RecordingDecoder(nn.Module):
    """Wraps a decoder and records the shapes of what it decodes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes = []

    def nll(self, latent, batch):
        self.shapes.append((tuple(latent.shape), tuple(batch.next_obs.shape)))
        return self.inner.nll(latent, batch)


def kl_1d(mq: float, lvq: float, mp: float, lvp: float) -> float:
    """KL(N(mq, e^lvq) || N(mp, e^lvp)) written out for scalars."""
    vq, vp = math.exp(lvq), math.exp(lvp)
    return 0.5 * (math.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0)


def bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def make_td(n: int, t: int, seed: int = 0, reward_key: str = "reward") -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    next_obs = torch.randint(0, 5, (n, t, 2), generator=g).float()
    obs = torch.cat([torch.zeros(n, 1, 2), next_obs[:, :-1]], 1)
    reward = torch.where(torch.rand(n, t, 1, generator=g) < 0.3, 1.0, -0.1)
    return TensorDict(
        {
            "observation": obs,
            "action": torch.randint(0, 5, (n, t), generator=g),
            "task": torch.randint(0, 5, (n, 1, 2), generator=g).float().expand(n, t, 2),
            "next": {
                # No inner-episode end here: the true next state is the policy's next input.
                "observation": next_obs,
                "true_observation": next_obs.clone(),
                reward_key: reward,
                "episode_done": torch.zeros(n, t, 1, dtype=torch.bool),
            },
        },
        batch_size=[n, t],
    )


def loss_terms(out: TensorDict) -> set[str]:
    """The names of the trained terms (the ``loss_*`` entries; the others are diagnostics)."""
    return {key for key, _ in out.items() if key.startswith("loss_")}


def zero_grid_decoder(latent_dim: int, bias: torch.Tensor | float) -> GridCellRewardDecoder:
    dec = GridCellRewardDecoder(latent_dim, grid_size=5)
    with torch.no_grad():
        dec.net[0].weight.zero_()
        if isinstance(bias, float):
            dec.net[0].bias.fill_(bias)
        else:
            dec.net[0].bias.copy_(bias)
    return dec


# -- gaussian_kl ---------------------------------------------------------------------------------
def test_gaussian_kl_unit_variance_shift():
    one = torch.tensor([[1.0]])
    zero = torch.tensor([[0.0]])
    kl = gaussian_kl(one, zero, zero, zero)
    assert kl.shape == (1,)
    assert kl.item() == pytest.approx(0.5)


def test_gaussian_kl_different_variances_by_formula():
    # q = N(1, 2^2), p = N(0, 1^2): 0.5 * (log(1/4) + (4 + 1) / 1 - 1) = 2 - log 2.
    kl = gaussian_kl(
        torch.tensor([1.0]), torch.tensor([math.log(4.0)]), torch.tensor([0.0]), torch.tensor([0.0])
    )
    assert kl.item() == pytest.approx(0.5 * (math.log(1.0 / 4.0) + (4.0 + 1.0) / 1.0 - 1.0))
    assert kl.item() == pytest.approx(1.3068528194400546)
    # q = N(0, 1), p = N(2, 2^2): 0.5 * (log(4) + (1 + 4) / 4 - 1).
    kl = gaussian_kl(
        torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([math.log(4.0)])
    )
    assert kl.item() == pytest.approx(0.5 * (math.log(4.0) + 5.0 / 4.0 - 1.0))
    assert kl.item() == pytest.approx(0.8181471805599453)
    # Same distribution: zero.
    assert gaussian_kl(*(torch.tensor([0.3, -1.2]),) * 4).item() == pytest.approx(0.0, abs=1e-7)


def test_gaussian_kl_sums_over_last_dim_only():
    mq = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    lvq = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    zero = torch.zeros(2, 2)
    kl = gaussian_kl(mq, lvq, zero, zero)
    assert kl.shape == (2,)
    assert kl[0].item() == pytest.approx(0.5 + kl_1d(0.0, math.log(4.0), 0.0, 0.0))
    assert kl[1].item() == pytest.approx(0.0)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    shape = (7, 3, 4)
    mq, mp = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    lvq, lvp = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    ours = gaussian_kl(mq, lvq, mp, lvp)
    q = Independent(Normal(mq, torch.exp(0.5 * lvq)), 1)
    p = Independent(Normal(mp, torch.exp(0.5 * lvp)), 1)
    torch.testing.assert_close(ours, kl_divergence(q, p), rtol=1e-5, atol=1e-5)
    assert (ours >= 0).all()


# -- ELBOLoss: KL ----------------------------------------------------------------------------------
def test_elbo_kl_term_by_hand():
    # N = 2 trajectories, T = 2 transitions, latent 1: posteriors q_0, q_1, q_2 per trajectory.
    means = [[0.5, 1.0, -0.5], [0.0, 0.0, 2.0]]
    logvars = [[0.0, math.log(4.0), math.log(0.25)], [0.0, 0.0, 0.0]]
    stub = StubEncoder(torch.tensor(means)[..., None], torch.tensor(logvars)[..., None])
    loss = ELBOLoss(stub, reward_decoder=GridCellRewardDecoder(1, grid_size=5))
    out = loss(make_td(2, 2))
    per_traj = []
    for m, lv in zip(means, logvars, strict=True):
        prev_m, prev_lv = [0.0, *m[:-1]], [0.0, *lv[:-1]]
        per_traj.append(sum(kl_1d(*args) for args in zip(m, lv, prev_m, prev_lv, strict=True)))
    # Trajectory 0: 0.125 + (3.25 - log 4) / 2 + (log 16 + 2.5 / 4 - 1) / 2; trajectory 1: 2.
    assert per_traj[0] == pytest.approx(
        0.125 + 0.5 * (3.25 - math.log(4.0)) + 0.5 * (math.log(16.0) + 0.625 - 1.0)
    )
    assert per_traj[1] == pytest.approx(2.0)
    assert out["loss_kl"].item() == pytest.approx(sum(per_traj) / 2, rel=1e-6)
    assert out["loss_kl"].item() == pytest.approx(2.127823590)


def test_elbo_kl_random_multidim_matches_loop():
    g = torch.Generator().manual_seed(1)
    n, t, latent = 3, 5, 4
    mean = torch.randn(n, t + 1, latent, generator=g)
    logvar = torch.randn(n, t + 1, latent, generator=g)
    loss = ELBOLoss(StubEncoder(mean, logvar), reward_decoder=GridCellRewardDecoder(latent, 5))
    out = loss(make_td(n, t))
    total = 0.0
    for i in range(n):
        for s in range(t + 1):
            for d in range(latent):
                pm = 0.0 if s == 0 else mean[i, s - 1, d].item()
                plv = 0.0 if s == 0 else logvar[i, s - 1, d].item()
                total += kl_1d(mean[i, s, d].item(), logvar[i, s, d].item(), pm, plv)
    assert out["loss_kl"].item() == pytest.approx(total / n, rel=1e-5)


def test_elbo_encoder_gets_trajectory_tensors():
    n, t = 2, 3
    stub = StubEncoder(torch.zeros(n, t + 1, 2), torch.zeros(n, t + 1, 2))
    td = make_td(n, t)
    # An inner-episode end at step 1: the policy's next observation is the start state, the
    # true next state is not; the encoder must get the true one.
    td["next", "observation"][:, 1] = 0.0
    td["next", "true_observation"][:, 1] = torch.tensor([3.0, 4.0])
    out = ELBOLoss(stub, reward_decoder=GridCellRewardDecoder(2, 5))(td)
    actions, rewards, next_obs = stub.calls[0]
    assert torch.equal(actions, td["action"])
    assert torch.equal(rewards, td["next", "reward"])
    assert torch.equal(next_obs, td["next", "true_observation"])
    assert out["loss_kl"].item() == 0.0  # prior everywhere


# -- ELBOLoss: likelihood terms ------------------------------------------------------------------
def test_elbo_grid_reward_term_by_hand():
    n, t, latent = 2, 4, 2
    g = torch.Generator().manual_seed(2)
    mean = torch.randn(n, t + 1, latent, generator=g)
    logvar = torch.full((n, t + 1, latent), -30.0)  # samples == means (std ~ 3e-7)
    dec = GridCellRewardDecoder(latent, grid_size=5)
    with torch.no_grad():
        dec.net[0].weight.copy_(torch.randn(25, latent, generator=g))
        dec.net[0].bias.copy_(torch.linspace(-2.0, 2.0, 25))
    td = make_td(n, t, seed=3)
    torch.manual_seed(0)
    out = ELBOLoss(StubEncoder(mean, logvar), reward_decoder=dec)(td)
    w, b = dec.net[0].weight.detach(), dec.net[0].bias.detach()
    total = 0.0
    for i in range(n):
        for s in range(t + 1):
            for j in range(t):
                x, y = td["next", "observation"][i, j].long().tolist()
                cell = x * 5 + y
                logit = (w[cell] @ mean[i, s]).item() + b[cell].item()
                target = 1.0 if td["next", "reward"][i, j, 0].item() > 0 else 0.0
                total += bce(logit, target)
    assert out["loss_reward"].item() == pytest.approx(total / n, rel=1e-5)
    assert loss_terms(out) == {"loss_kl", "loss_reward"}


def test_elbo_continuous_reward_term_by_hand():
    n, t, latent = 2, 3, 2
    g = torch.Generator().manual_seed(4)
    mean = torch.randn(n, t + 1, latent, generator=g)
    logvar = torch.full((n, t + 1, latent), -30.0)
    dec = RewardDecoder(latent, obs_dim=2, action_dim=5, hidden=(), use_obs=False, use_action=False)
    with torch.no_grad():  # prediction = m_0 + 2 * next_x - 0.5
        dec.net[0].weight.copy_(torch.tensor([[1.0, 0.0, 2.0, 0.0]]))
        dec.net[0].bias.fill_(-0.5)
    td = make_td(n, t, seed=5)
    td["next", "reward"] = torch.randn(n, t, 1, generator=g)
    out = ELBOLoss(StubEncoder(mean, logvar), reward_decoder=dec)(td)
    total = 0.0
    for i in range(n):
        for s in range(t + 1):
            for j in range(t):
                pred = mean[i, s, 0].item() + 2 * td["next", "observation"][i, j, 0].item() - 0.5
                total += (pred - td["next", "reward"][i, j, 0].item()) ** 2
    assert out["loss_reward"].item() == pytest.approx(total / n, rel=1e-5)


def test_elbo_state_term_decodes_the_true_next_state_at_inner_episode_ends():
    n, t, latent = 2, 5, 2
    stub = StubEncoder(torch.zeros(n, t + 1, latent), torch.full((n, t + 1, latent), -30.0))
    dec = StateDecoder(latent, obs_dim=2, action_dim=5, hidden=(), discrete_actions=True)
    target = torch.tensor([1.0, -2.0])
    with torch.no_grad():
        dec.net[0].weight.zero_()
        dec.net[0].bias.copy_(target)
    td = make_td(n, t, seed=6)
    # Inner-episode ends: the policy's next observation is the start (0, 0); the true next
    # state is what the state decoder reconstructs, on every step (nothing masked).
    for i, j in ((0, 1), (1, 3)):
        td["next", "episode_done"][i, j] = True
        td["next", "observation"][i, j] = 0.0
    out = ELBOLoss(stub, state_decoder=dec)(td)
    true_next = td["next", "true_observation"]
    total = 0.0
    for i in range(n):
        for j in range(t):
            total += (t + 1) * ((target - true_next[i, j]) ** 2).sum().item()
    assert out["loss_state"].item() == pytest.approx(total / n, rel=1e-5)
    assert loss_terms(out) == {"loss_kl", "loss_state"}


def test_elbo_task_term_uses_task_at_index_zero():
    n, t, latent = 3, 4, 2
    stub = StubEncoder(torch.randn(n, t + 1, latent), torch.full((n, t + 1, latent), -30.0))
    dec = TaskDecoder(latent, task_dim=2, hidden=())
    bias = torch.tensor([2.0, 1.0])
    with torch.no_grad():
        dec.net[0].weight.zero_()
        dec.net[0].bias.copy_(bias)
    td = make_td(n, t, seed=7)
    task = torch.full((n, t, 2), 100.0)  # garbage except at index 0
    task[:, 0] = torch.tensor([[3.0, 4.0], [0.0, 2.0], [4.0, 4.0]])
    td["task"] = task
    out = ELBOLoss(stub, task_decoder=dec)(td)
    per_traj = [(t + 1) * ((bias - task[i, 0]) ** 2).sum().item() for i in range(n)]
    # (t + 1) * [(1 + 9), (4 + 1), (4 + 9)] / 3
    assert per_traj == pytest.approx([50.0, 25.0, 65.0])
    assert out["loss_task"].item() == pytest.approx(sum(per_traj) / n)
    assert loss_terms(out) == {"loss_kl", "loss_task"}


# -- sub-sampling ---------------------------------------------------------------------------------
def test_subsampled_loss_is_unbiased_rescaling_for_constant_terms():
    n, t, latent = 2, 10, 3
    stub = StubEncoder(torch.randn(n, t + 1, latent), torch.zeros(n, t + 1, latent))
    td = make_td(n, t, seed=8)
    td["next", "reward"] = torch.full((n, t, 1), -0.1)  # every target 0: every term softplus(c)
    c = 0.7
    task_dec = TaskDecoder(latent, task_dim=2, hidden=())
    with torch.no_grad():
        task_dec.net[0].weight.zero_()
        task_dec.net[0].bias.zero_()
    td["task"] = torch.ones(n, t, 2)  # every task term is 2
    full = ELBOLoss(stub, reward_decoder=zero_grid_decoder(latent, c), task_decoder=task_dec)
    rec = RecordingDecoder(zero_grid_decoder(latent, c))
    sub = ELBOLoss(
        stub, reward_decoder=rec, task_decoder=task_dec, elbo_subsample=3, decode_subsample=4
    )
    torch.manual_seed(0)
    out_full = full(td)
    torch.manual_seed(0)
    out_sub = sub(td)
    assert out_full["loss_reward"].item() == pytest.approx((t + 1) * t * softplus(c), rel=1e-6)
    assert out_sub["loss_reward"].item() == pytest.approx(out_full["loss_reward"].item(), rel=1e-6)
    assert out_full["loss_task"].item() == pytest.approx((t + 1) * 2.0)
    assert out_sub["loss_task"].item() == pytest.approx(out_full["loss_task"].item())
    # It did sub-sample: 3 ELBO steps, 4 decoded transitions.
    assert rec.shapes == [((n, 3, latent), (n, 4, 2))]
    # The KL term is never sub-sampled.
    assert out_sub["loss_kl"].item() == pytest.approx(out_full["loss_kl"].item())


def test_subsample_larger_than_available_uses_everything():
    n, t, latent = 2, 4, 2
    stub = StubEncoder(torch.zeros(n, t + 1, latent), torch.zeros(n, t + 1, latent))
    rec = RecordingDecoder(zero_grid_decoder(latent, 0.0))
    ELBOLoss(stub, reward_decoder=rec, elbo_subsample=50, decode_subsample=50)(make_td(n, t))
    assert rec.shapes == [((n, t + 1, latent), (n, t, 2))]


def test_subsampled_loss_is_rescaled_sum_of_selected_terms():
    # Non-constant terms: the sub-sampled loss is (T+1)/Te * T/Tj times the sum of the terms at
    # the drawn (t, j), so that it is an unbiased estimate of the full sum.
    n, t, latent = 2, 6, 2
    g = torch.Generator().manual_seed(9)
    mean = torch.randn(n, t + 1, latent, generator=g)
    stub = StubEncoder(mean, torch.full((n, t + 1, latent), -30.0))
    dec = GridCellRewardDecoder(latent, grid_size=5)
    td = make_td(n, t, seed=10)
    full_loss = ELBOLoss(stub, reward_decoder=dec)
    with torch.no_grad():
        # All [N, T+1, T] terms at the posterior means (the samples, as the std is ~3e-7).
        terms = dec.nll(mean, full_loss._batch(td))
        full = full_loss(td)["loss_reward"].item()
    assert full == pytest.approx(terms.sum().item() / n, rel=1e-5)

    sub = ELBOLoss(stub, reward_decoder=dec, elbo_subsample=2, decode_subsample=3)
    drawn = []
    original = sub._subsample

    def recording_subsample(*args, **kwargs):
        index = original(*args, **kwargs)
        drawn.append(index)
        return index

    sub._subsample = recording_subsample
    torch.manual_seed(0)
    values = []
    for _ in range(5):
        drawn.clear()
        with torch.no_grad():
            value = sub(td)["loss_reward"].item()
        elbo_index, decode_index = drawn
        assert len(elbo_index) == 2 and len(decode_index) == 3
        selected = terms[:, elbo_index][:, :, decode_index].sum().item() / n
        assert value == pytest.approx(selected * (t + 1) / 2 * t / 3, rel=1e-5)
        values.append(value)
    assert len(set(values)) > 1  # the draws really are random


@pytest.mark.parametrize("name", ["elbo_subsample", "decode_subsample"])
def test_invalid_subsample_raises(name):
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    with pytest.raises(ValueError, match=name):
        ELBOLoss(enc, reward_decoder=GridCellRewardDecoder(5, 5), **{name: 0})


def test_needs_a_decoder_and_2d_batch():
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    with pytest.raises(ValueError, match="decoder"):
        ELBOLoss(enc)
    loss = ELBOLoss(enc, reward_decoder=GridCellRewardDecoder(5, 5))
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        loss(make_td(2, 3).reshape(-1))


# -- gradients, keys, integration -----------------------------------------------------------------
def test_gradients_reach_encoder_and_decoder():
    torch.manual_seed(0)
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, hidden_size=16)
    dec = GridCellRewardDecoder(5, grid_size=5, hidden=(16,))
    loss = ELBOLoss(enc, reward_decoder=dec)
    out = loss(make_td(4, 12, seed=11))
    (out["loss_reward"] + out["loss_kl"]).backward()
    for module in (enc, dec):
        for name, param in module.named_parameters():
            assert param.grad is not None, name
            assert param.grad.abs().sum() > 0, name
    # Gradients of the KL alone reach the encoder too.
    enc.zero_grad()
    loss(make_td(4, 12, seed=11))["loss_kl"].backward()
    assert enc.mean_head.weight.grad.abs().sum() > 0
    assert enc.gru.weight_hh_l0.grad.abs().sum() > 0


def test_set_keys_renames_reward_key():
    torch.manual_seed(0)
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, hidden_size=16)
    dec = GridCellRewardDecoder(5, grid_size=5)
    td = make_td(3, 6, seed=12)
    renamed = td.clone()
    renamed.rename_key_(("next", "reward"), ("next", "my_reward"))
    default = ELBOLoss(enc, reward_decoder=dec)
    custom = ELBOLoss(enc, reward_decoder=dec)
    custom.set_keys(reward=("next", "my_reward"))
    assert ("next", "my_reward") in custom.in_keys
    assert ("next", "reward") not in custom.in_keys
    torch.manual_seed(1)
    expected = default(td)
    torch.manual_seed(1)
    got = custom(renamed)
    for key in ("loss_kl", "loss_reward"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_in_and_out_keys():
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    loss = ELBOLoss(
        enc,
        reward_decoder=GridCellRewardDecoder(5, 5),
        state_decoder=StateDecoder(5, 2, 5, discrete_actions=True),
        task_decoder=TaskDecoder(5, 2),
    )
    terms = ["loss_kl", "loss_reward", "loss_state", "loss_task"]
    assert loss.out_keys == terms + ["kl", "nll_reward", "nll_state", "nll_task"]
    assert set(loss.in_keys) == {
        "action",
        ("next", "true_observation"),
        ("next", "reward"),
        "observation",
        "task",
    }


def test_elbo_on_bamdp_rollout_all_terms():
    torch.manual_seed(0)
    env = BAMDPEnv(GridNaviEnv(num_envs=3), episode_length=5, episodes_per_task=2, seed=0)
    rollout = env.rollout(10, break_when_any_done=False)
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, hidden_size=16)
    loss = ELBOLoss(
        enc,
        reward_decoder=GridCellRewardDecoder(5, 5),
        state_decoder=StateDecoder(5, 2, 5, hidden=(8,), discrete_actions=True),
        task_decoder=TaskDecoder(5, 2, hidden=(8,)),
        elbo_subsample=4,
        decode_subsample=6,
    )
    out = loss(rollout)
    assert loss_terms(out) == {"loss_kl", "loss_reward", "loss_state", "loss_task"}
    for value in out.values():
        assert value.shape == () and torch.isfinite(value)
        assert value.item() >= 0
    sum(out.values()).backward()
    assert enc.gru.weight_ih_l0.grad.abs().sum() > 0


def test_reward_labels_land_on_the_goal_across_inner_episode_ends():
    """On real BAMDP rollouts every goal reward is credited to the goal cell, including the
    last step of an inner episode, whose policy observation is already the start state: the
    ELBO reads the true next state, which is the goal cell there."""
    from torchrl.envs import TransformedEnv

    from torchrl_bamdp.envs import make_env
    from torchrl_bamdp.policies import BayesOptimalPolicy
    from torchrl_bamdp.transforms import exact_belief_transforms

    env = TransformedEnv(make_env(num_envs=42, stratified=True, seed=0), exact_belief_transforms())
    with torch.no_grad():
        rollout = env.rollout(60, BayesOptimalPolicy.from_env(env), break_when_any_done=False)
    decoder = GridCellRewardDecoder(5, grid_size=5)
    batch = ELBOLoss(BeliefEncoder(2, 5, True), reward_decoder=decoder)._batch(rollout)
    cells = batch.next_obs.long()
    hit = batch.reward[..., 0] > 0
    goal = rollout["task"].long()
    inner_end = (rollout["next", "episode_done"] & ~rollout["next", "done"])[..., 0]
    assert bool((hit & inner_end).any())  # goal rewards at inner-episode ends occur
    assert bool((rollout["next", "observation"][hit & inner_end] == 0).all())
    assert bool((cells[hit] == goal[hit]).all())
    assert not bool(((cells == goal).all(-1) & ~hit).any())


def test_own_generator_makes_the_loss_reproducible_and_leaves_the_global_stream_alone():
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, latent_dim=3, discrete_actions=True)
    decoder = GridCellRewardDecoder(3, grid_size=5)
    loss = ELBOLoss(encoder, reward_decoder=decoder, elbo_subsample=4, decode_subsample=5)
    td = make_td(4, 9)
    torch.manual_seed(99)
    global_draws = torch.rand(3)

    def loss_value(seed: int) -> float:
        loss.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(99)
        value = loss(td)["loss_reward"].item()
        assert torch.equal(torch.rand(3), global_draws)  # the loss drew nothing from it
        return value

    first = loss_value(5)
    assert loss_value(5) == first
    assert loss_value(6) != first


# -- ELBO semantics: reductions and sub-sampling modes, on hand-computed batches -----------------
# N = 2 trajectories, T = 3 steps, latent 1. The posterior means name their step,
# m[n, t] = 10 n + t, with log-variance 0, and the latent noise is patched to 0, so the latent
# decoded for ELBO step t is exactly m[n, t]. The stub decoder's NLL of transition j under
# latent m is m + x[n, j] with x[n, j] = j + 1 (the true next state's first coordinate).
# KL(q_t || q_{t-1}) with unit variances is (m_t - m_{t-1})^2 / 2: KL[n, 0] = m[n, 0]^2 / 2
# (0 and 50), every later one 1/2; per trajectory 1.5 and 51.5.
HAND_MEAN = torch.tensor([[0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]])


class SumDecoder(nn.Module):
    """nll(latent, batch)[n, k, j] = latent[n, k, 0] + next_obs[n, j, 0], recording its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def nll(self, latent, batch):
        self.calls.append((latent.detach().clone(), batch.next_obs.detach().clone()))
        return latent[..., 0].unsqueeze(-1) + batch.next_obs[..., 0].unsqueeze(1)


class LatentTaskDecoder(nn.Module):
    """Task NLL = the latent itself: l^task[n, k] = m[n, t_{n,k}]."""

    def nll(self, latent, batch):
        return latent[..., 0]


def hand_td() -> TensorDict:
    td = make_td(2, 3)
    x = torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)
    td["next", "true_observation"] = torch.stack([x, torch.zeros(2, 3)], -1)
    return td


def hand_loss(**kwargs) -> ELBOLoss:
    stub = StubEncoder(HAND_MEAN[..., None], torch.zeros(2, 4, 1))
    loss = ELBOLoss(stub, reward_decoder=SumDecoder(), task_decoder=LatentTaskDecoder(), **kwargs)
    loss._noise = lambda shape, like: torch.zeros(shape, dtype=like.dtype, device=like.device)
    return loss


def test_both_modes_without_subsampling_by_hand():
    # Reconstruction: sum over t = 0..3 and j = 0..2 of (m[n, t] + x[n, j]) = 3 sum_t m + 4 * 6:
    # 3 * 6 + 24 = 42 and 3 * 46 + 24 = 162, averaged over the trajectories in every mode: 102.
    ours = hand_loss()(hand_td())
    assert ours["loss_reward"].item() == pytest.approx(102.0)
    assert ours["loss_kl"].item() == pytest.approx((1.5 + 51.5) / 2)  # mean over trajectories
    assert ours["loss_task"].item() == pytest.approx((6.0 + 46.0) / 2)  # sum_t m, mean
    original = hand_loss(kl_reduction="sum", task_reduction="sum", subsample_mode="original")(
        hand_td()
    )
    assert original["loss_reward"].item() == pytest.approx(102.0)
    assert original["loss_kl"].item() == pytest.approx(1.5 + 51.5)  # summed over trajectories
    assert original["loss_task"].item() == pytest.approx(6.0 + 46.0)


def test_rescaled_mode_with_fixed_draws_by_hand():
    # ELBO steps {1, 3} of 4 and decode steps {0, 2} of 3, shared by both trajectories.
    loss = hand_loss(elbo_subsample=2, decode_subsample=2)
    draws = iter([torch.tensor([1, 3]), torch.tensor([0, 2])])
    loss._subsample = lambda full, wanted, device: next(draws)
    out = loss(hand_td())
    # n = 0: sum_{t in {1, 3}} sum_{j in {0, 2}} (m + x) = 2 (1 + 3) + 2 (1 + 3) = 16;
    # n = 1: 2 (11 + 13) + 2 (1 + 3) = 56; rescaled by 4/2 * 3/2 = 3, then averaged: 108.
    assert out["loss_reward"].item() == pytest.approx((16.0 * 3 + 56.0 * 3) / 2)
    assert out["loss_kl"].item() == pytest.approx((1.5 + 51.5) / 2)  # every KL term, kept
    # task: 4/2 * (1 + 3) = 8 and 4/2 * (11 + 13) = 48, averaged.
    assert out["loss_task"].item() == pytest.approx((8.0 + 48.0) / 2)


#: Per trajectory ELBO steps (with a repeat) and, per ELBO step, decode steps (with repeats).
HAND_ELBO_DRAW = torch.tensor([[3, 3], [0, 2]])
HAND_DECODE_DRAW = torch.tensor([[[0, 0], [2, 1]], [[1, 2], [0, 0]]])


def patched_original(**kwargs) -> ELBOLoss:
    loss = hand_loss(elbo_subsample=2, decode_subsample=2, subsample_mode="original", **kwargs)
    draws = iter([HAND_ELBO_DRAW, HAND_DECODE_DRAW])
    loss._draw_with_replacement = lambda upper, count: next(draws)
    return loss


def test_original_mode_with_fixed_draws_by_hand():
    loss = patched_original(kl_reduction="sum", task_reduction="sum")
    out = loss(hand_td())
    # n = 0: t = 3 (m = 3) with j = (0, 0): 4 + 4; t = 3 again with j = (2, 1): 6 + 5 -> 19.
    # n = 1: t = 0 (m = 10) with j = (1, 2): 12 + 13; t = 2 (m = 12), j = (0, 0): 13 + 13 -> 51.
    # Not rescaled; averaged over the trajectories.
    assert out["loss_reward"].item() == pytest.approx((19.0 + 51.0) / 2)
    # KL only at the drawn ELBO steps, repeats counted: 0.5 + 0.5 and 50 + 0.5, summed.
    assert out["loss_kl"].item() == pytest.approx(1.0 + 50.5)
    # Task at the drawn steps: 3 + 3 and 10 + 12, summed over the trajectories.
    assert out["loss_task"].item() == pytest.approx(6.0 + 22.0)
    # Each (trajectory, ELBO step) was decoded on its own decode steps with its own latent.
    latent, next_obs = loss.reward_decoder.calls[0]
    assert latent.reshape(-1).tolist() == [3.0, 3.0, 10.0, 12.0]
    assert next_obs[..., 0].tolist() == [[1.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 1.0]]
    # The same draws with our reductions: the KL and the task are averaged instead.
    mean = patched_original()(hand_td())
    assert mean["loss_kl"].item() == pytest.approx((1.0 + 50.5) / 2)
    assert mean["loss_task"].item() == pytest.approx((6.0 + 22.0) / 2)
    assert mean["loss_reward"].item() == pytest.approx(out["loss_reward"].item())


def original_vae_formula(
    latent_mean: torch.Tensor,
    latent_logvar: torch.Tensor,
    logits_fn,
    cells: torch.Tensor,
    rewards: torch.Tensor,
    elbo_indices: torch.Tensor,
    decode_indices: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official implementation's reward and KL terms (vae.py, defaults of every env:
    vae_avg_elbo_terms = vae_avg_reconstruction_terms = False), written in its own layout
    (time first: latents [T+1, N, L], data [T, N, .]) with the noise of the samples at 0.

    ``elbo_indices [N, K]`` and ``decode_indices [N, K, L]`` are the draws (the original makes
    them with ``random_``); ``cells [T, N]`` the landed cell index, ``rewards [T, N, 1]``.
    """
    num_elbos, batchsize = elbo_indices.shape[1], elbo_indices.shape[0]
    num_decodes = decode_indices.shape[2]
    # latent_samples[elbo_indices, task_indices].reshape(num_elbos, batchsize, -1)
    flat_elbo = elbo_indices.t().reshape(-1)  # position s * batchsize + b holds trajectory b
    task_indices = torch.arange(batchsize).repeat(num_elbos)
    samples = latent_mean[flat_elbo, task_indices].reshape(num_elbos, batchsize, -1)
    # dec_*[indices0, indices1, indices2].reshape(num_elbos, num_decodes, batchsize, -1)
    dec_cells = torch.empty(num_elbos, num_decodes, batchsize, dtype=torch.long)
    dec_rewards = torch.empty(num_elbos, num_decodes, batchsize, 1)
    for e in range(num_elbos):
        for d in range(num_decodes):
            for b in range(batchsize):
                step = decode_indices[b, e, d]
                dec_cells[e, d, b] = cells[step, b]
                dec_rewards[e, d, b] = rewards[step, b]
    dec_embedding = samples.unsqueeze(0).expand(num_decodes, *samples.shape).transpose(1, 0)
    # multihead Bernoulli reward decoder: p(goal at the landed cell), BCE with (r == 1)
    p_rew = torch.sigmoid(logits_fn(dec_embedding))  # [E, D, N, cells]
    rew_pred = p_rew.gather(dim=-1, index=dec_cells.unsqueeze(-1))
    target = (dec_rewards == 1).float()
    bce_terms = -(target * torch.log(rew_pred) + (1 - target) * torch.log(1 - rew_pred))
    loss_rew = bce_terms.mean(dim=-1)  # [E, D, N]
    rew_reconstruction_loss = loss_rew.sum(dim=0).sum(dim=0).mean()
    # KL to the previous posterior, q_{-1} = N(0, I), then taken at the sampled ELBO indices
    all_means = torch.cat((torch.zeros(1, *latent_mean.shape[1:]), latent_mean))
    all_logvars = torch.cat((torch.zeros(1, *latent_logvar.shape[1:]), latent_logvar))
    mu, m = all_means[1:], all_means[:-1]
    log_e, log_s = all_logvars[1:], all_logvars[:-1]
    gauss_dim = latent_mean.shape[-1]
    kl = 0.5 * (
        log_s.sum(-1)
        - log_e.sum(-1)
        - gauss_dim
        + (torch.exp(log_e) / torch.exp(log_s)).sum(-1)
        + ((m - mu) / torch.exp(log_s) * (m - mu)).sum(-1)
    )  # [T+1, N]
    kl = kl[flat_elbo, task_indices].reshape(num_elbos, batchsize)
    kl_loss = kl.sum(dim=0).sum(dim=0).mean()
    return rew_reconstruction_loss, kl_loss


def test_original_mode_reproduces_the_official_formula_on_a_gridnavi_batch():
    n, t, latent = 3, 6, 2
    g = torch.Generator().manual_seed(21)
    mean = torch.randn(n, t + 1, latent, generator=g)
    logvar = 0.5 * torch.randn(n, t + 1, latent, generator=g)
    mean[:, 0], logvar[:, 0] = 0.0, 0.0  # q_0 is the prior
    decoder = GridCellRewardDecoder(latent, grid_size=5, hidden=(8,))
    td = make_td(n, t, seed=22)
    loss = ELBOLoss(
        StubEncoder(mean, logvar),
        reward_decoder=decoder,
        elbo_subsample=5,
        decode_subsample=4,
        kl_reduction="sum",
        subsample_mode="original",
        generator=torch.Generator().manual_seed(23),
    )
    loss._noise = lambda shape, like: torch.zeros(shape, dtype=like.dtype, device=like.device)
    draws = []
    draw = loss._draw_with_replacement

    def recording_draw(upper, count):
        drawn = draw(upper, count)
        draws.append(drawn)
        return drawn

    loss._draw_with_replacement = recording_draw
    out = loss(td)
    elbo_indices, decode_indices = draws
    assert elbo_indices.shape == (n, 5) and decode_indices.shape == (n, 5, 4)
    landed = td["next", "true_observation"].long()
    cells = (landed[..., 0] * 5 + landed[..., 1]).t()  # [T, N]
    with torch.no_grad():
        rew, kl = original_vae_formula(
            mean.transpose(0, 1),
            logvar.transpose(0, 1),
            decoder.logits,
            cells,
            td["next", "reward"].transpose(0, 1),
            elbo_indices,
            decode_indices,
        )
    assert out["loss_reward"].item() == pytest.approx(rew.item(), rel=1e-5)
    assert out["loss_kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    # ours (the defaults), on the same posteriors, is another objective
    ours = ELBOLoss(StubEncoder(mean, logvar), reward_decoder=decoder)(td)
    assert ours["loss_kl"].item() != pytest.approx(kl.item(), rel=1e-2)


def recorded_original_draws(td: TensorDict, seed: int) -> list[torch.Tensor]:
    n, t = td.batch_size
    loss = ELBOLoss(
        StubEncoder(torch.zeros(n, t + 1, 1), torch.zeros(n, t + 1, 1)),
        reward_decoder=zero_grid_decoder(1, 0.0),
        elbo_subsample=40,
        decode_subsample=30,
        subsample_mode="original",
        generator=torch.Generator().manual_seed(seed),
    )
    draws = []
    draw = loss._draw_with_replacement

    def recording_draw(upper, count):
        draws.append(draw(upper, count))
        return draws[-1]

    loss._draw_with_replacement = recording_draw
    loss(td)
    return draws


def test_original_draws_are_per_trajectory_with_replacement_within_each_length():
    n, t = 4, 5
    td = make_td(n, t, seed=24)
    valid = torch.ones(n, t, dtype=torch.bool)
    valid[1, 2:] = False  # trajectory 1 has 2 real steps: ELBO steps 0..2, decode steps 0..1
    td["valid"] = valid
    elbo, decode = recorded_original_draws(td, seed=25)
    lengths = valid.sum(1)
    assert elbo.shape == (n, 40) and decode.shape == (n, 40, 30)
    for i in range(n):
        # with replacement: 40 draws from T_n + 1 values, every value taken, none outside
        assert set(elbo[i].tolist()) == set(range(int(lengths[i]) + 1))
        assert set(decode[i].flatten().tolist()) == set(range(int(lengths[i])))
    assert not torch.equal(elbo[0], elbo[2])  # per trajectory, not shared
    assert not torch.equal(decode[0, 0], decode[0, 1])  # per ELBO step, not shared
    # The loss's generator fixes the draws.
    for first, second in zip(recorded_original_draws(td, seed=25), (elbo, decode), strict=True):
        assert torch.equal(first, second)
    assert not torch.equal(recorded_original_draws(td, seed=26)[0], elbo)


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("kl_reduction", "avg", "('mean', 'sum')"),
        ("task_reduction", "none", "('mean', 'sum')"),
        ("subsample_mode", "unbiased", "('rescaled', 'original')"),
    ],
)
def test_elbo_options_are_validated_with_the_allowed_values(option, value, allowed):
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    with pytest.raises(ValueError) as err:
        ELBOLoss(enc, reward_decoder=GridCellRewardDecoder(5, 5), **{option: value})
    message = str(err.value)
    assert option in message and repr(value) in message and allowed in message


def test_default_semantics_are_ours():
    loss = ELBOLoss(BeliefEncoder(2, 5, True), reward_decoder=GridCellRewardDecoder(5, 5))
    assert (loss.kl_reduction, loss.task_reduction, loss.subsample_mode) == (
        "mean",
        "mean",
        "rescaled",
    )


def test_original_mode_on_a_bamdp_rollout_with_every_decoder():
    torch.manual_seed(0)
    env = BAMDPEnv(GridNaviEnv(num_envs=3), episode_length=5, episodes_per_task=2, seed=0)
    rollout = env.rollout(10, break_when_any_done=False)
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, hidden_size=16)
    loss = ELBOLoss(
        enc,
        reward_decoder=GridCellRewardDecoder(5, 5),
        state_decoder=StateDecoder(5, 2, 5, hidden=(8,), discrete_actions=True),
        task_decoder=TaskDecoder(5, 2, hidden=(8,), mse_reduction="mean"),
        elbo_subsample=7,
        decode_subsample=3,
        kl_reduction="sum",
        task_reduction="sum",
        subsample_mode="original",
        generator=torch.Generator().manual_seed(0),
    )
    out = loss(rollout)
    assert loss_terms(out) == {"loss_kl", "loss_reward", "loss_state", "loss_task"}
    for value in out.values():
        assert value.shape == () and torch.isfinite(value) and value.item() >= 0
    sum(out.values()).backward()
    assert enc.gru.weight_ih_l0.grad.abs().sum() > 0
    assert loss.state_decoder.net[0].weight.grad.abs().sum() > 0


# -- weights (TorchRL's convention: the loss weighs its terms) ---------------------------------
WEIGHTS = {"reward_weight": 0.7, "state_weight": 0.3, "task_weight": 2.5, "kl_weight": 0.01}


@pytest.mark.parametrize("mode", ["rescaled", "original"])
def test_weighted_terms_sum_bit_for_bit_to_the_hand_weighted_sum(mode):
    """The objective (sum of ``loss_*``) is exactly what the trainer computed before the
    weights moved into the loss: ``sum(weight[k] * unweighted[k])`` in the terms' order."""

    def make(**weights):
        torch.manual_seed(3)  # the same networks for both losses
        enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, hidden_size=16)
        return ELBOLoss(
            enc,
            reward_decoder=GridCellRewardDecoder(5, 5),
            state_decoder=StateDecoder(5, 2, 5, hidden=(8,), discrete_actions=True),
            task_decoder=TaskDecoder(5, 2, hidden=(8,)),
            elbo_subsample=4,
            decode_subsample=6,
            subsample_mode=mode,
            generator=torch.Generator().manual_seed(0),
            **weights,
        )

    td = make_td(6, 12, seed=5)
    plain, weighted = make(), make(**WEIGHTS)
    unweighted = plain(td)
    out = weighted(td)
    by_term = {f"loss_{k.removesuffix('_weight')}": w for k, w in WEIGHTS.items()}
    # Today's formula, written out: the trainer's weights times the unweighted terms, in order.
    hand = sum(by_term[k] * v for k, v in unweighted.items() if k.startswith("loss_"))
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    assert [k for k, _ in out.items() if k.startswith("loss_")] == [
        "loss_kl",
        "loss_reward",
        "loss_state",
        "loss_task",
    ]
    assert torch.equal(total, hand)  # bit for bit
    for key, diagnostic in (
        ("loss_kl", "kl"),
        ("loss_reward", "nll_reward"),
        ("loss_state", "nll_state"),
        ("loss_task", "nll_task"),
    ):
        assert torch.equal(out[diagnostic], unweighted[key])  # unweighted, beside the term
        assert torch.equal(out[key], by_term[key] * unweighted[key])
        assert not out[diagnostic].requires_grad  # a diagnostic, never trained
    # The gradients are those of the hand-weighted objective, too.
    total.backward()
    hand.backward()
    for a, b in zip(weighted.parameters(), plain.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad)


def test_negative_weight_is_refused():
    enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    with pytest.raises(ValueError, match="kl_weight must be >= 0"):
        ELBOLoss(enc, reward_decoder=GridCellRewardDecoder(5, 5), kl_weight=-1.0)
