"""BeliefEncoder's options for the original: the episode-done input (done_input, the original's
add_done_info) and truncated BPTT in sequence (detach_every, the original's tbptt_stepsize)."""

from __future__ import annotations

import pytest
import torch

from torchrl_bamdp.modules import BeliefEncoder


def _encoder(done_input: bool = False, seed: int = 0) -> BeliefEncoder:
    torch.manual_seed(seed)
    return BeliefEncoder(
        obs_dim=3,
        action_dim=2,
        discrete_actions=False,
        latent_dim=4,
        hidden_size=12,
        action_embed=6,
        obs_embed=5,
        reward_embed=3,
        done_input=done_input,
    )


def _inputs(n: int = 4, t: int = 13, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    done = torch.zeros(n, t, 1, dtype=torch.bool)
    done[:, 4::5] = True  # inner episodes of 5 steps
    return (
        torch.randn(n, t, 2, generator=g),
        torch.randn(n, t, 1, generator=g),
        torch.randn(n, t, 3, generator=g),
        done,
    )


# --- done_input ------------------------------------------------------------------------------


def test_done_input_embeds_the_flag_with_the_state_by_hand():
    encoder = _encoder(done_input=True)
    assert encoder.obs_encoder.in_features == 3 + 1
    action, reward, obs, done = (x[:, 0] for x in _inputs())
    done = done | torch.tensor([True, False, True, False]).unsqueeze(-1)
    w, b = encoder.obs_encoder.weight, encoder.obs_encoder.bias
    state_part = torch.relu(torch.cat([obs, done.float()], -1) @ w.T + b)
    embedded = encoder.embed(action, reward, obs, done)
    # Order: action, reward, state (+ flag) embeddings.
    torch.testing.assert_close(embedded[:, -5:], state_part)
    # A flag of shape [B] reads the same as [B, 1], float the same as bool.
    torch.testing.assert_close(encoder.embed(action, reward, obs, done[:, 0]), embedded)
    torch.testing.assert_close(encoder.embed(action, reward, obs, done.float()), embedded)


def test_done_input_changes_the_belief_and_step_equals_sequence():
    encoder = _encoder(done_input=True)
    actions, rewards, obs, done = _inputs()
    n, t = actions.shape[:2]
    with torch.no_grad():
        mean, logvar, hidden = encoder.sequence(actions, rewards, obs, done=done)
        h = encoder.initial_hidden(n)
        for step in range(t):
            m, lv, h = encoder.step(
                actions[:, step], rewards[:, step], obs[:, step], h, done=done[:, step]
            )
            torch.testing.assert_close(m, mean[:, step + 1], atol=1e-6, rtol=0)
            torch.testing.assert_close(lv, logvar[:, step + 1], atol=1e-6, rtol=0)
            torch.testing.assert_close(h, hidden[:, step + 1], atol=1e-6, rtol=0)
        no_flags, _, _ = encoder.sequence(actions, rewards, obs, done=torch.zeros_like(done))
    # Up to the first episode end the flags are all 0: same beliefs; from there on they differ.
    torch.testing.assert_close(no_flags[:, :5], mean[:, :5], rtol=0, atol=0)
    assert not torch.allclose(no_flags[:, 5], mean[:, 5])


def test_done_input_requires_the_flag_and_a_state_embedding():
    encoder = _encoder(done_input=True)
    actions, rewards, obs, done = _inputs()
    with pytest.raises(ValueError, match="needs the inner-episode-done flag"):
        encoder.sequence(actions, rewards, obs)
    with pytest.raises(ValueError, match="needs the inner-episode-done flag"):
        encoder.step(actions[:, 0], rewards[:, 0], obs[:, 0], encoder.initial_hidden(4))
    with pytest.raises(ValueError, match="done must have shape"):
        encoder.sequence(actions, rewards, obs, done=done[:, :3])
    with pytest.raises(ValueError, match="obs_embed must be > 0"):
        BeliefEncoder(2, 5, True, obs_embed=0, done_input=True)
    with pytest.raises(ValueError, match="done_input must be True or False"):
        BeliefEncoder(2, 5, True, done_input="yes")


def test_done_input_off_is_todays_encoder_and_ignores_a_flag():
    off, default = _encoder(done_input=False), _encoder()
    assert off.obs_encoder.in_features == 3
    assert {k: v.shape for k, v in off.state_dict().items()} == {
        k: v.shape for k, v in default.state_dict().items()
    }
    actions, rewards, obs, done = _inputs()
    with torch.no_grad():
        plain = default.sequence(actions, rewards, obs)
        given = off.sequence(actions, rewards, obs, done=done)
    for a, b in zip(plain, given, strict=True):
        assert torch.equal(a, b)


# --- detach_every (truncated BPTT) -------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4, 5, 13, 100])
def test_detach_every_keeps_the_values(k):
    encoder = _encoder(done_input=True)
    actions, rewards, obs, done = _inputs()
    with torch.no_grad():
        full = encoder.sequence(actions, rewards, obs, done=done)
        truncated = encoder.sequence(actions, rewards, obs, done=done, detach_every=k)
    for a, b in zip(full, truncated, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    if k >= actions.shape[1]:  # one chunk: the very same computation
        for a, b in zip(full, truncated, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_detach_every_cuts_gradients_at_chunk_boundaries(k):
    """d mean_s / d a_t is nonzero exactly for the transitions t < s of the chunk of s - 1."""
    encoder = _encoder()
    actions, rewards, obs, _ = _inputs(n=2, t=10)
    actions.requires_grad_(True)
    mean, _, _ = encoder.sequence(actions, rewards, obs, detach_every=k)
    for s in range(1, 11):
        (grad,) = torch.autograd.grad(mean[:, s].sum(), actions, retain_graph=True)
        reaches = grad.abs().sum((0, 2)) > 0  # [T]
        chunk_start = ((s - 1) // k) * k
        expected = torch.zeros(10, dtype=torch.bool)
        expected[chunk_start:s] = True
        assert torch.equal(reaches, expected), (s, reaches)
    # Without truncation every earlier transition reaches every later belief.
    full, _, _ = encoder.sequence(actions, rewards, obs)
    (grad,) = torch.autograd.grad(full[:, 10].sum(), actions)
    assert (grad.abs().sum((0, 2)) > 0).all()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "50"])
def test_detach_every_is_validated(bad):
    encoder = _encoder()
    actions, rewards, obs, _ = _inputs()
    with pytest.raises(ValueError, match="detach_every must be None or an int >= 1"):
        encoder.sequence(actions, rewards, obs, detach_every=bad)
