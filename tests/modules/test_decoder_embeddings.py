"""RewardDecoder / StateDecoder input embeddings (obs_embed, action_embed), as the original's
RewardDecoder and StateTransitionDecoder; 0 (default) keeps today's decoders."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from torchrl_bamdp.modules import RewardDecoder, StateDecoder, TransitionBatch


def _batch(discrete: bool = False, seed: int = 0) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    action = (
        torch.randint(0, 4, (2, 5), generator=g) if discrete else torch.randn(2, 5, 4, generator=g)
    )
    return TransitionBatch(
        torch.randn(2, 5, 3, generator=g),
        action,
        torch.randn(2, 5, 3, generator=g),
        torch.randn(2, 5, 1, generator=g),
    )


@pytest.mark.parametrize("discrete", [False, True])
def test_reward_decoder_embeddings_by_hand(discrete):
    torch.manual_seed(0)
    dec = RewardDecoder(
        6, 3, 4, hidden=(8,), discrete_actions=discrete, obs_embed=32, action_embed=16
    )
    assert dec.net[0].in_features == 6 + 32 + 32 + 16  # m, s', s (shared embedding), a
    batch, latent = _batch(discrete), torch.randn(2, 3, 6)
    action = F.one_hot(batch.action, 4).float() if discrete else batch.action
    ws, bs = dec.obs_encoder.weight, dec.obs_encoder.bias
    wa, ba = dec.action_encoder.weight, dec.action_encoder.bias
    features = torch.cat(
        [
            torch.relu(batch.next_obs @ ws.T + bs),
            torch.relu(batch.obs @ ws.T + bs),  # the same state embedding for s_t
            torch.relu(action @ wa.T + ba),
        ],
        -1,
    )  # [2, 5, 80]
    x = torch.cat(
        [latent.unsqueeze(2).expand(2, 3, 5, 6), features.unsqueeze(1).expand(2, 3, 5, 80)], -1
    )
    prediction = dec.net(x)
    torch.testing.assert_close(dec.predict(latent, batch), prediction)
    expected = (prediction - batch.reward.unsqueeze(1)).pow(2).sum(-1)
    torch.testing.assert_close(dec.nll(latent, batch), expected)


def test_reward_decoder_embeddings_follow_use_obs_and_use_action():
    dec = RewardDecoder(6, 3, 4, use_obs=False, use_action=False, obs_embed=32, action_embed=16)
    assert dec.net[0].in_features == 6 + 32 and not hasattr(dec, "action_encoder")
    assert dec.nll(torch.randn(2, 3, 6), _batch()).shape == (2, 3, 5)
    only_state = RewardDecoder(6, 3, 4, obs_embed=32)  # raw action, embedded states
    assert only_state.net[0].in_features == 6 + 32 + 32 + 4
    only_action = RewardDecoder(6, 3, 4, action_embed=16)
    assert only_action.net[0].in_features == 6 + 3 + 3 + 16


def test_state_decoder_embeddings_by_hand():
    torch.manual_seed(0)
    dec = StateDecoder(6, 3, 4, hidden=(8,), obs_embed=32, action_embed=32)
    assert dec.net[0].in_features == 6 + 32 + 32
    batch, latent = _batch(), torch.randn(2, 3, 6)
    features = torch.cat(
        [
            torch.relu(dec.obs_encoder(batch.obs)),
            torch.relu(dec.action_encoder(batch.action)),
        ],
        -1,
    )
    x = torch.cat(
        [latent.unsqueeze(2).expand(2, 3, 5, 6), features.unsqueeze(1).expand(2, 3, 5, 64)], -1
    )
    expected = (dec.net(x) - batch.next_obs.unsqueeze(1)).pow(2).sum(-1)
    torch.testing.assert_close(dec.nll(latent, batch), expected)


@pytest.mark.parametrize("make", [RewardDecoder, StateDecoder])
def test_default_decoders_are_todays(make):
    """0 = no embedding: today's parameter names and shapes, and the same numbers for a seed."""
    torch.manual_seed(0)
    default = make(5, 3, 2)
    torch.manual_seed(0)
    explicit = make(5, 3, 2, obs_embed=0, action_embed=0)
    shapes = {k: tuple(v.shape) for k, v in default.state_dict().items()}
    in_dim = 5 + 3 + 3 + 2 if make is RewardDecoder else 5 + 3 + 2
    out_dim = 1 if make is RewardDecoder else 3
    assert shapes == {
        "net.0.weight": (64, in_dim),
        "net.0.bias": (64,),
        "net.2.weight": (32, 64),
        "net.2.bias": (32,),
        "net.4.weight": (out_dim, 32),
        "net.4.bias": (out_dim,),
    }
    batch = TransitionBatch(
        torch.randn(2, 9, 3), torch.randn(2, 9, 2), torch.randn(2, 9, 3), torch.randn(2, 9, 1)
    )
    latent = torch.randn(2, 4, 5)
    assert torch.equal(default.nll(latent, batch), explicit.nll(latent, batch))


def test_default_reward_decoder_numbers_are_todays_for_a_fixed_seed():
    """Recorded before the options existed (bit-identical on the machine that added them; a
    small tolerance covers other CPUs' float kernels)."""
    torch.manual_seed(0)
    rd = RewardDecoder(5, 3, 2)
    sd = StateDecoder(5, 3, 2)
    batch = TransitionBatch(
        torch.randn(2, 9, 3), torch.randn(2, 9, 2), torch.randn(2, 9, 3), torch.randn(2, 9, 1)
    )
    latent = torch.randn(2, 4, 5)
    with torch.no_grad():
        reward, state = rd.nll(latent, batch).flatten()[:3], sd.nll(latent, batch).flatten()[:3]
    expected_reward = torch.tensor([1.072882056236267, 0.5905107855796814, 0.16091643273830414])
    expected_state = torch.tensor([0.26159602403640747, 1.2695913314819336, 0.22219428420066833])
    torch.testing.assert_close(reward, expected_reward, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, expected_state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [RewardDecoder, StateDecoder])
@pytest.mark.parametrize("name", ["obs_embed", "action_embed"])
@pytest.mark.parametrize("bad", [-1, 2.5, True, "32"])
def test_embedding_sizes_are_validated(make, name, bad):
    with pytest.raises(ValueError, match=f"{make.__name__}: {name} must be an int >= 0"):
        make(5, 3, 2, **{name: bad})
