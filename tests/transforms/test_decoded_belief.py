"""The decoded belief as policy input (``algo.policy_belief``)."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
from torchrl_bamdp.modules import BeliefEncoder, GridCellRewardDecoder, RewardDecoder
from torchrl_bamdp.transforms import (
    BELIEF_DECODED,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    DecodedBelief,
    varibad_transforms,
)


def parts(seed: int = 0) -> tuple[BeliefEncoder, GridCellRewardDecoder]:
    torch.manual_seed(seed)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, hidden_size=16)
    return encoder, GridCellRewardDecoder(latent_dim=5, grid_size=5, hidden=[8])


def make_env(policy_belief: str, num_envs: int = 3) -> tuple[TransformedEnv, GridCellRewardDecoder]:
    encoder, decoder = parts()
    base = BAMDPEnv(GridNaviEnv(num_envs=num_envs), 15, 4, seed=0)
    return TransformedEnv(base, varibad_transforms(encoder, decoder, policy_belief)), decoder


@pytest.mark.parametrize("policy_belief", ["decoded", "latent+decoded"])
def test_env_specs(policy_belief):
    env, _ = make_env(policy_belief)
    check_env_specs(env, seed=0)
    width = {"decoded": 2 + 25, "latent+decoded": 2 + 10 + 25}[policy_belief]
    assert env.observation_spec["hyper_state"].shape == (3, width)


def test_decoded_belief_is_the_decoder_of_the_mean_at_every_step():
    env, decoder = make_env("latent+decoded")
    torch.manual_seed(3)
    with torch.no_grad():
        rollout = env.rollout(60, break_when_any_done=False)
    for td in (rollout, rollout["next"]):
        expected = decoder.probabilities(td[BELIEF_MEAN])
        torch.testing.assert_close(td[BELIEF_DECODED], expected, rtol=0, atol=1e-6)
        hyper_state = torch.cat(
            [td["observation"], td[BELIEF_MEAN], td[BELIEF_LOGVAR], td[BELIEF_DECODED]], -1
        )
        torch.testing.assert_close(td["hyper_state"], hyper_state, rtol=0, atol=0)
    # the prior decodes to the same heatmap in every env
    first = rollout[BELIEF_DECODED][:, 0]
    torch.testing.assert_close(first, decoder.probabilities(torch.zeros(3, 5)), rtol=0, atol=0)


def test_decoded_only_hyper_state_and_no_gradients():
    env, decoder = make_env("decoded")
    td = env.rand_step(env.reset())["next"]
    torch.testing.assert_close(
        td["hyper_state"], torch.cat([td["observation"], td[BELIEF_DECODED]], -1)
    )
    assert not td[BELIEF_DECODED].requires_grad


def test_collection_follows_the_decoder_the_elbo_trains():
    env, decoder = make_env("decoded")
    before = env.reset()[BELIEF_DECODED].clone()
    with torch.no_grad():
        for p in decoder.parameters():
            p.add_(0.5)
    assert not torch.equal(env.reset()[BELIEF_DECODED], before)


def test_decoder_is_not_moved_to_eval_nor_owned():
    env, decoder = make_env("decoded")
    env.eval()
    assert decoder.training
    decoded = next(t for t in env.transform if isinstance(t, DecodedBelief))
    assert decoded.decoder is decoder
    assert not list(decoded.parameters())  # the ELBO loss owns (and checkpoints) the decoder


def test_bad_arguments():
    encoder, decoder = parts()
    with pytest.raises(ValueError, match="policy_belief must be one of"):
        varibad_transforms(encoder, decoder, "heatmap")
    with pytest.raises(ValueError, match="'auto' is resolved by the config"):
        varibad_transforms(encoder, decoder, "auto")
    with pytest.raises(ValueError, match="needs the decoder"):
        varibad_transforms(encoder, None, "decoded")
    with pytest.raises(TypeError, match="per-cell decoder"):
        DecodedBelief(RewardDecoder(5, 2, 5, [8], discrete_actions=True))


def test_a_replayed_reset_writes_the_saved_decoded_prior_once():
    env, decoder = make_env("decoded")
    first = env.reset()[BELIEF_DECODED]
    torch.testing.assert_close(decoded_transform(env).last_reset, first, rtol=0, atol=0)
    saved = first.clone()
    with torch.no_grad():  # the updates after the reset change the decoder ...
        for p in decoder.parameters():
            p.add_(0.5)
    decoded_transform(env).replay_next_reset = saved  # ... a resumed run replays that reset
    torch.testing.assert_close(env.reset()[BELIEF_DECODED], saved, rtol=0, atol=0)
    assert decoded_transform(env).replay_next_reset is None
    assert not torch.equal(env.reset()[BELIEF_DECODED], saved)  # only once


def decoded_transform(env: TransformedEnv) -> DecodedBelief:
    return next(t for t in env.transform if isinstance(t, DecodedBelief))
