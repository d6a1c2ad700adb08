"""SwitchingELBOLoss: hazard-weighted future decoding and the mixture-prior KL, on hand-checkable
cases (the maths: torchrl_bamdp/objectives/switching_elbo.py)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from torchrl_bamdp.modules import BeliefEncoder, GridCellRewardDecoder
from torchrl_bamdp.objectives import ELBOLoss, SwitchingELBOLoss, switching_decode_weights
from torchrl_bamdp.objectives.elbo import gaussian_kl


def trajectories(n: int = 3, t: int = 7, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, 3, (n, t, 2), generator=g).float()
    reward = torch.where(torch.rand(n, t, 1, generator=g) < 0.3, 1.0, -0.1)
    return TensorDict(
        {
            "observation": torch.zeros(n, t, 2),
            "action": torch.randint(0, 5, (n, t), generator=g),
            "next": {"true_observation": cells, "reward": reward},
        },
        [n, t],
    )


def make_loss(hazard: float, **kwargs) -> SwitchingELBOLoss:
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, latent_dim=3)
    decoder = GridCellRewardDecoder(latent_dim=3, grid_size=3, hidden=[8])
    return SwitchingELBOLoss(encoder, hazard=hazard, reward_decoder=decoder, **kwargs)


def without_noise(loss: ELBOLoss) -> ELBOLoss:
    # Latents at the belief means: the loss becomes a deterministic function to check by hand.
    loss._noise = lambda shape, like: torch.zeros(shape, dtype=like.dtype)
    return loss


def test_decode_weights_are_the_no_switch_probabilities_ahead_only() -> None:
    w = switching_decode_weights(5, hazard=0.2)
    for t in range(5):
        for j in range(5):
            expected = 0.8 ** (j - t) if j >= t else 0.0  # the past is never decoded
            assert w[t, j].item() == pytest.approx(expected)
    window = switching_decode_weights(5, hazard=0.2, window=2)
    assert torch.equal(window != 0, (w != 0) & (torch.arange(5) - torch.arange(5)[:, None] < 2))
    # hazard 0: every later transition has weight 1 (VariBAD's decoding, future half only).
    assert torch.equal(switching_decode_weights(3, 0.0), torch.ones(3, 3).triu())


@pytest.mark.parametrize(("hazard", "window"), [(0.25, None), (0.1, 3), (1.0, None)])
def test_reward_term_is_the_weighted_sum_over_pairs(hazard: float, window: int | None) -> None:
    loss = without_noise(make_loss(hazard, decode_window=window))
    td = trajectories()
    out = loss(td)
    n, t = td.shape
    with torch.no_grad():
        mean, _, _ = loss.encoder.sequence(
            td["action"], td["next", "reward"], td["next", "true_observation"]
        )
        logits = loss.reward_decoder.logits(mean)  # [N, T + 1, 9]
    expected = 0.0
    for i in range(n):
        for s in range(t):  # beliefs 0..T-1 (the last one has no future)
            for j in range(s, t if window is None else min(t, s + window)):
                x, y = td["next", "true_observation"][i, j].long().tolist()
                target = float(td["next", "reward"][i, j, 0] > 0)
                nll = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[i, s, x * 3 + y], torch.tensor(target)
                )
                expected += (1 - hazard) ** (j - s) * nll.item()
    assert out["loss_reward"].item() == pytest.approx(expected / n, rel=1e-5)


def test_kl_is_the_convex_bound_of_the_mixture_prior() -> None:
    loss = make_loss(0.3)
    mean = torch.randn(2, 5, 3)
    logvar = 0.1 * torch.randn(2, 5, 3)
    mean[:, 0], logvar[:, 0] = 0.0, 0.0  # q_0 is the prior
    terms = loss.kl_terms(mean, logvar)
    prev = gaussian_kl(mean[:, 1:], logvar[:, 1:], mean[:, :-1], logvar[:, :-1])
    prior = gaussian_kl(mean[:, 1:], logvar[:, 1:], torch.zeros(2, 4, 3), torch.zeros(2, 4, 3))
    torch.testing.assert_close(terms[:, 1:], 0.7 * prev + 0.3 * prior)
    assert torch.equal(terms[:, 0], torch.zeros(2))
    # hazard 0: VariBAD's KL term, exactly.
    td = trajectories()
    fixed = ELBOLoss(loss.encoder, reward_decoder=loss.reward_decoder)
    zero = SwitchingELBOLoss(loss.encoder, hazard=0.0, reward_decoder=loss.reward_decoder)
    assert torch.equal(zero(td)["loss_kl"], fixed(td)["loss_kl"])


def test_kl_forgets_toward_the_prior_at_the_hazard() -> None:
    # One latent dim, unit variances: the KL alone is (1-h)(m - mu)^2/2 + h m^2/2 for a belief
    # mean m after a last posterior mean mu, minimised at m = (1 - h) mu: each step without
    # evidence, the belief the KL prefers moves a fraction h of the way back to the prior,
    # as the exact filter's predict step (1 - h) q + h p does.
    hazard, mu = 0.2, 3.0
    loss = make_loss(hazard)
    m = torch.linspace(0.0, 4.0, 4001)
    mean = torch.stack([torch.zeros_like(m), torch.full_like(m, mu), m], dim=1).unsqueeze(-1)
    kl = loss.kl_terms(mean, torch.zeros_like(mean))[:, 2]
    assert m[kl.argmin()].item() == pytest.approx((1 - hazard) * mu, abs=1e-3)


def test_padding_steps_are_not_decoded() -> None:
    td = trajectories(n=2, t=6)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    td["valid"] = valid
    loss = without_noise(make_loss(0.1))
    out = loss(td)
    # Changing what lies in the padding changes nothing.
    td2 = td.clone()
    td2["next", "reward"][1, 4:] = 1.0 - td2["next", "reward"][1, 4:]
    td2["next", "true_observation"][1, 4:] = 2.0
    out2 = loss(td2)
    assert torch.equal(out["loss_reward"], out2["loss_reward"])


def test_reads_nothing_privileged() -> None:
    loss = make_loss(0.1)
    assert not {"task", "task_switched"} & {
        k if isinstance(k, str) else k[-1] for k in loss.in_keys
    }
    loss(trajectories())  # no task entry in the batch at all
    encoder, decoder = loss.encoder, loss.reward_decoder
    with pytest.raises(ValueError, match="task decoder"):
        SwitchingELBOLoss(encoder, 0.1, reward_decoder=decoder, task_decoder=decoder)
    with pytest.raises(ValueError, match="rescaled"):
        SwitchingELBOLoss(encoder, 0.1, reward_decoder=decoder, subsample_mode="original")
    with pytest.raises(ValueError, match="hazard"):
        SwitchingELBOLoss(encoder, 1.5, reward_decoder=decoder)
    with pytest.raises(ValueError, match="decode_window"):
        SwitchingELBOLoss(encoder, 0.1, reward_decoder=decoder, decode_window=0)


def test_subsampled_steps_are_rescaled() -> None:
    # One draw: beliefs E and decode steps J shared by the batch, the sum over E x J rescaled by
    # T/|E| * T/|J| (unbiased for the full sum, as ELBOLoss's "rescaled" mode).
    td = trajectories(n=2, t=6)
    loss = without_noise(make_loss(0.2, elbo_subsample=2, decode_subsample=3))
    drawn = {6: [torch.tensor([1, 4]), torch.tensor([2, 3, 5])]}
    loss._subsample = lambda full, wanted, device: drawn[full].pop(0)
    out = loss(td)
    with torch.no_grad():
        mean, _, _ = loss.encoder.sequence(
            td["action"], td["next", "reward"], td["next", "true_observation"]
        )
        logits = loss.reward_decoder.logits(mean)
    expected = 0.0
    for i in range(2):
        for s in (1, 4):
            for j in (2, 3, 5):
                if j < s:
                    continue
                x, y = td["next", "true_observation"][i, j].long().tolist()
                target = torch.tensor(float(td["next", "reward"][i, j, 0] > 0))
                nll = torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[i, s, x * 3 + y], target
                )
                expected += 0.8 ** (j - s) * nll.item()
    assert out["loss_reward"].item() == pytest.approx(expected / 2 * 3 * 2, rel=1e-5)
