"""BeliefEncoder: step-by-step filtering equals the sequence pass; prior; clamping."""

from __future__ import annotations

import pytest
import torch

from torchrl_bamdp.modules import BeliefEncoder


def _step_loop(encoder, actions, rewards, obs, hidden):
    means, logvars, hiddens = [], [], []
    for t in range(actions.shape[1]):
        mean, logvar, hidden = encoder.step(actions[:, t], rewards[:, t], obs[:, t], hidden)
        means.append(mean)
        logvars.append(logvar)
        hiddens.append(hidden)
    return torch.stack(means, 1), torch.stack(logvars, 1), torch.stack(hiddens, 1)


def test_continuous_action_encoder_step_equals_sequence():
    torch.manual_seed(0)
    encoder = BeliefEncoder(
        obs_dim=3,
        action_dim=2,
        discrete_actions=False,
        latent_dim=4,
        hidden_size=12,
        action_embed=6,
        obs_embed=5,
        reward_embed=3,
    )
    n, t = 5, 17
    actions = torch.randn(n, t, 2)
    rewards = torch.randn(n, t, 1)
    obs = torch.randn(n, t, 3)
    with torch.no_grad():
        mean, logvar, hidden = encoder.sequence(actions, rewards, obs)
        s_mean, s_logvar, s_hidden = _step_loop(
            encoder, actions, rewards, obs, encoder.initial_hidden(n)
        )
    assert mean.shape == (n, t + 1, 4) and hidden.shape == (n, t + 1, 12)
    torch.testing.assert_close(mean[:, 0], torch.zeros(n, 4), rtol=0, atol=0)
    torch.testing.assert_close(logvar[:, 0], torch.zeros(n, 4), rtol=0, atol=0)
    torch.testing.assert_close(hidden[:, 0], torch.zeros(n, 12), rtol=0, atol=0)
    torch.testing.assert_close(mean[:, 1:], s_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar[:, 1:], s_logvar, atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden[:, 1:], s_hidden, atol=1e-6, rtol=0)
    # The action matters: changing only the actions changes the beliefs.
    with torch.no_grad():
        other, _, _ = encoder.sequence(actions + 1.0, rewards, obs)
    assert not torch.allclose(other[:, 1:], mean[:, 1:])


def test_sequence_with_initial_hidden_and_without_prior():
    torch.manual_seed(1)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, action_embed=4)
    n, t = 3, 9
    actions = torch.randint(0, 5, (n, t))
    rewards = torch.randn(n, t, 1)
    obs = torch.randn(n, t, 2)
    h0 = torch.randn(n, encoder.hidden_size)
    with torch.no_grad():
        mean, logvar, hidden = encoder.sequence(actions, rewards, obs, hidden=h0, with_prior=False)
        s_mean, s_logvar, s_hidden = _step_loop(encoder, actions, rewards, obs, h0)
    assert mean.shape == (n, t, encoder.latent_dim)
    torch.testing.assert_close(mean, s_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar, s_logvar, atol=1e-6, rtol=0)
    torch.testing.assert_close(hidden, s_hidden, atol=1e-6, rtol=0)
    with torch.no_grad():
        _, _, with_prior = encoder.sequence(actions, rewards, obs, hidden=h0)
    torch.testing.assert_close(with_prior[:, 0], h0)


def test_discrete_action_is_one_hot_embedded():
    torch.manual_seed(2)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, action_embed=3)
    action = torch.tensor([0, 4])
    emb = encoder.embed(action, torch.zeros(2, 1), torch.zeros(2, 2))
    expected = torch.relu(encoder.action_encoder.weight[:, action].T + encoder.action_encoder.bias)
    torch.testing.assert_close(emb[:, :3], expected)


def test_without_action_embedding_actions_are_ignored():
    torch.manual_seed(3)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)  # action_embed=0
    assert encoder.action_encoder is None
    rewards = torch.randn(2, 4, 1)
    obs = torch.randn(2, 4, 2)
    with torch.no_grad():
        a, _, _ = encoder.sequence(torch.zeros(2, 4, dtype=torch.long), rewards, obs)
        b, _, _ = encoder.sequence(torch.full((2, 4), 3), rewards, obs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_prior_and_initial_hidden_shapes():
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, latent_dim=7)
    mean, logvar = encoder.prior(3, 4)
    assert mean.shape == logvar.shape == (3, 4, 7)
    assert mean.eq(0).all() and logvar.eq(0).all()
    assert encoder.initial_hidden(2).shape == (2, 64)
    assert encoder.initial_hidden(2).eq(0).all()


def test_logvar_is_clamped():
    encoder = BeliefEncoder(
        obs_dim=2, action_dim=5, discrete_actions=True, logvar_min=-3.0, logvar_max=2.0
    )
    with torch.no_grad():
        encoder.logvar_head.weight.zero_()
        encoder.logvar_head.bias.fill_(100.0)
        _, logvar, _ = encoder.step(
            torch.zeros(2, dtype=torch.long),
            torch.zeros(2, 1),
            torch.zeros(2, 2),
            encoder.initial_hidden(2),
        )
        assert logvar.eq(2.0).all()
        encoder.logvar_head.bias.fill_(-100.0)
        _, logvar, _ = encoder.sequence(
            torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, 1), torch.zeros(2, 3, 2)
        )
    assert logvar[:, 1:].eq(-3.0).all()
    assert logvar[:, 0].eq(0.0).all()  # the prior is not clamped away


def test_no_inputs_raises():
    with pytest.raises(ValueError, match="embed"):
        BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, obs_embed=0, reward_embed=0)


def test_step_is_the_gru_modules_step_with_the_same_gradients():
    """``step`` runs the GRU's cell operator on its weights: nn.GRU's values and gradients."""
    torch.manual_seed(3)
    encoder = BeliefEncoder(obs_dim=4, action_dim=2, discrete_actions=False, hidden_size=16)
    n = 7
    action, reward, obs = torch.randn(n, 2), torch.randn(n, 1), torch.randn(n, 4)
    hidden = torch.randn(n, 16)

    mean, logvar, h = encoder.step(action, reward, obs, hidden)
    (mean.square().sum() + logvar.sum() + h.sum()).backward()
    grads = [p.grad.clone() for p in encoder.gru.parameters()]
    encoder.zero_grad()

    x = encoder.embed(action, reward, obs, None).unsqueeze(1)
    out, h_ref = encoder.gru(x, hidden.unsqueeze(0))
    mean_ref, logvar_ref = encoder._heads(out.squeeze(1))
    (mean_ref.square().sum() + logvar_ref.sum() + h_ref.sum()).backward()
    torch.testing.assert_close(h, h_ref.squeeze(0), atol=1e-7, rtol=0)
    torch.testing.assert_close(mean, mean_ref, atol=1e-7, rtol=0)
    for grad, param in zip(grads, encoder.gru.parameters(), strict=True):
        torch.testing.assert_close(grad, param.grad, atol=1e-6, rtol=1e-6)
