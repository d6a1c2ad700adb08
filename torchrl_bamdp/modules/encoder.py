"""The VariBAD belief encoder: a GRU over embedded (previous action, reward, observation)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from torchrl_bamdp.modules.gru import gru_sequence


class BeliefEncoder(nn.Module):
    """Recurrent encoder of q(m | tau_:t): one GRU step per transition (a_t, r_{t+1}, s_{t+1}).

    The same module serves online filtering (:meth:`step`, used by the belief transform during
    collection) and training over stored trajectories (:meth:`sequence`, used by the ELBO loss);
    both run the same ``nn.GRU`` so they give the same beliefs.

    ``obs``/``next_obs`` is the state the transition *really* landed in, s_{t+1}: at the end of
    an inner episode that is the true last state (``("next", "true_observation")`` of
    :class:`~torchrl_bamdp.envs.BAMDPEnv`), not the start state the next episode begins from,
    as in the original, so that a reward received on the last step of an episode is encoded
    with the state it was received in.

    Parameters
    ----------
    obs_dim : int
        Size of the observation vector.
    action_dim : int
        Number of discrete actions (one-hot embedded) or size of a continuous action.
    discrete_actions : bool
        Whether actions are integer indices.
    latent_dim : int
        Size of the latent task embedding m.
    hidden_size : int
        GRU hidden size.
    obs_embed, action_embed, reward_embed : int
        Sizes of the per-input embeddings (ReLU after a linear layer). ``action_embed=0`` leaves
        the action out, as the original does on GridNavi.
    reward_dim : int
        Size of the reward vector (1 for scalar rewards).
    logvar_min, logvar_max : float
        Log-variances are clamped to this range so that ``exp`` stays finite in the KL.
    done_input : bool
        ``False`` (default, today's encoder): the GRU reads (a_t, r_{t+1}, s_{t+1}).
        ``True`` reproduces the original's ``add_done_info`` (on when a task has more than one
        episode): the inner-episode-done flag d_{t+1} of each transition (1.0 on the step that
        ends an inner episode, ``("next", "episode_done")`` of
        :class:`~torchrl_bamdp.envs.BAMDPEnv`) is appended to s_{t+1} before the state
        embedding, which then has ``obs_dim + 1`` inputs (the original appends the flag to the
        state). :meth:`step` and :meth:`sequence` then need ``done``; the belief transform and
        the ELBO loss pass it. Needs ``obs_embed > 0``.
    obs_net : nn.Module, optional
        The state embedding itself, in place of ``Linear(obs_dim, obs_embed)``: for image
        observations a :class:`~torchrl_bamdp.modules.pixels.PixelEmbedding` from frames
        ``[..., C, H, W]`` to ``obs_embed`` features (its ``out_features``). ``obs_dim`` is then
        its ``in_features``; ``done_input`` is not available (the flag joins a state vector).

    Examples
    --------
    >>> enc = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True, latent_dim=5)
    >>> hidden = enc.initial_hidden(3)
    >>> mean, logvar, hidden = enc.step(torch.zeros(3, dtype=torch.long), torch.zeros(3, 1),
    ...                                 torch.zeros(3, 2), hidden)
    >>> mean.shape, hidden.shape
    (torch.Size([3, 5]), torch.Size([3, 64]))

    On frames, with a CNN as the state embedding:

    >>> from torchrl_bamdp.modules.pixels import PixelEmbedding
    >>> enc = BeliefEncoder(0, 5, True, obs_embed=32, obs_net=PixelEmbedding((3, 32, 32), 32))
    >>> frames = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    >>> enc.step(torch.zeros(3), torch.zeros(3, 1), frames, enc.initial_hidden(3))[0].shape
    torch.Size([3, 5])
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        discrete_actions: bool,
        latent_dim: int = 5,
        hidden_size: int = 64,
        obs_embed: int = 8,
        action_embed: int = 0,
        reward_embed: int = 8,
        reward_dim: int = 1,
        logvar_min: float = -10.0,
        logvar_max: float = 10.0,
        done_input: bool = False,
        obs_net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if obs_net is not None:
            width = getattr(obs_net, "out_features", None)
            if width != obs_embed or done_input:
                raise ValueError(
                    "BeliefEncoder: obs_net must map observations to obs_embed features "
                    f"(its out_features {width}, obs_embed {obs_embed}), without done_input "
                    f"(got {done_input})"
                )
            obs_dim = int(getattr(obs_net, "in_features", obs_dim))
        if not isinstance(done_input, bool):
            raise ValueError(
                f"BeliefEncoder: done_input must be True or False (got {done_input!r})"
            )
        if done_input and obs_embed <= 0:
            raise ValueError(
                "BeliefEncoder: done_input=True appends the done flag to the state embedding's "
                f"input, so obs_embed must be > 0 (got {obs_embed})"
            )
        self.done_input = done_input
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.discrete_actions = discrete_actions
        self.latent_dim = latent_dim
        self.hidden_size = hidden_size
        self.logvar_min = logvar_min
        self.logvar_max = logvar_max
        obs_in = obs_dim + 1 if done_input else obs_dim
        #: Whether observations are fed to ``obs_net`` as they are (frames), not as floats.
        self.raw_obs = obs_net is not None
        if obs_net is not None:
            self.obs_encoder = obs_net
        else:
            self.obs_encoder = nn.Linear(obs_in, obs_embed) if obs_embed > 0 else None
        self.action_encoder = nn.Linear(action_dim, action_embed) if action_embed > 0 else None
        self.reward_encoder = nn.Linear(reward_dim, reward_embed) if reward_embed > 0 else None
        gru_in = obs_embed + action_embed + reward_embed
        if gru_in == 0:
            raise ValueError("at least one of obs_embed, action_embed, reward_embed must be > 0")
        self.gru = nn.GRU(gru_in, hidden_size, batch_first=True)
        self.mean_head = nn.Linear(hidden_size, latent_dim)
        self.logvar_head = nn.Linear(hidden_size, latent_dim)
        for name, param in self.gru.named_parameters():
            if "bias" in name:
                nn.init.zeros_(param)
            else:
                nn.init.orthogonal_(param)

    def initial_hidden(self, *batch: int, device: torch.device | None = None) -> torch.Tensor:
        """The hidden state at a task start: zeros of shape ``[*batch, hidden_size]``."""
        return torch.zeros(*batch, self.hidden_size, device=device)

    def prior(self, *batch: int, device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
        """The belief at a task start, N(0, I): ``(mean, logvar)`` zeros of ``[*batch, latent]``."""
        zeros = torch.zeros(*batch, self.latent_dim, device=device)
        return zeros, zeros.clone()

    def embed(
        self,
        action: torch.Tensor,
        reward: torch.Tensor,
        obs: torch.Tensor,
        done: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed one or many transitions; inputs share leading dims ``[...]``.

        ``done`` (``[..., 1]`` or ``[...]``, bool or float) is the inner-episode-done flag of each
        transition, read only with ``done_input=True`` (where it is required).
        """
        if self.done_input:
            obs = torch.cat([obs.float(), self._done_feature(done, obs)], dim=-1)
        parts = []
        if self.action_encoder is not None:
            if self.discrete_actions:
                # Not F.one_hot: its index-range check is two host syncs per step (the env has
                # checked the actions already).
                index = torch.arange(self.action_dim, device=action.device)
                action = (action.long().unsqueeze(-1) == index).float()
            parts.append(F.relu(self.action_encoder(action.float())))
        if self.reward_encoder is not None:
            parts.append(F.relu(self.reward_encoder(reward.float())))
        if self.obs_encoder is not None:
            parts.append(self.embed_observation(obs))
        return torch.cat(parts, dim=-1)

    def embed_observation(self, obs: torch.Tensor) -> torch.Tensor:
        """The state embedding ``relu(obs_encoder(obs))`` of observations ``[..., *obs_shape]``
        (without the done flag): what the policy reads of a frame with
        ``algo.cnn.policy=shared``."""
        # Frames go to the CNN as they are (it scales them): a float copy of a uint8 batch
        # first would cost 4x its memory.
        return F.relu(self.obs_encoder(obs if self.raw_obs else obs.float()))

    @staticmethod
    def _done_feature(done: torch.Tensor | None, obs: torch.Tensor) -> torch.Tensor:
        if done is None:
            raise ValueError(
                "BeliefEncoder(done_input=True) needs the inner-episode-done flag of every "
                "transition: pass done= (('next', 'episode_done') of BAMDPEnv)"
            )
        if done.shape == obs.shape[:-1]:
            done = done.unsqueeze(-1)
        if done.shape != (*obs.shape[:-1], 1):
            raise ValueError(
                f"BeliefEncoder: done must have shape {(*obs.shape[:-1], 1)} or "
                f"{tuple(obs.shape[:-1])} (got {tuple(done.shape)})"
            )
        return done.to(torch.float32)

    def _heads(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logvar = self.logvar_head(out).clamp(self.logvar_min, self.logvar_max)
        return self.mean_head(out), logvar

    def latent_of(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` the heads give for GRU hidden states ``[..., hidden_size]``; at the
        zero hidden state of a task start that is the heads' biases (the original's prior), not
        the fixed N(0, I) of :meth:`prior`."""
        return self._heads(hidden)

    def step(
        self,
        action: torch.Tensor,
        reward: torch.Tensor,
        obs: torch.Tensor,
        hidden: torch.Tensor,
        done: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One belief update for a batch ``[B]`` from (a_t, r_{t+1}, true s_{t+1}[, d_{t+1}]):
        returns ``(mean, logvar, new_hidden)``."""
        x = self.embed(action, reward, obs, done)
        gru = self.gru
        # The GRU's own cell operator on its weights: nn.GRU's values for one step, without its
        # sequence wrapper (95-110 instead of 150-170 us per call at 16 x 128 on one CPU thread).
        h = torch.gru_cell(
            x, hidden, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
        )
        mean, logvar = self._heads(h)
        return mean, logvar, h

    def sequence(
        self,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        hidden: torch.Tensor | None = None,
        with_prior: bool = True,
        done: torch.Tensor | None = None,
        detach_every: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Beliefs along ``[N, T]`` transitions of trajectories that start at a task start.

        ``next_obs`` holds the true s_{t+1} of every transition (as :meth:`step` reads it);
        ``done`` (``[N, T, 1]``) the inner-episode-done flags, read with ``done_input=True``.

        ``detach_every=k`` is truncated backpropagation through time, as the original's
        ``RNNEncoder(detach_every=tbptt_stepsize)``: the GRU runs over chunks of k transitions
        ``[0, k), [k, 2k), ...`` and the hidden state handed from one chunk to the next is
        detached. The values are those of the full pass (up to float rounding); the gradient of a
        belief at step s w.r.t. the inputs and the hidden states reaches back only to the start
        of its chunk. ``None`` (default): full backpropagation through the whole sequence.

        With gradients on the CPU and at most ``FAST_GRU_MAX_BATCH`` trajectories (RL2's PPO
        minibatches on MuJoCo), the GRU pass and its backward run in
        :func:`~torchrl_bamdp.modules.gru.gru_sequence`: the same values and gradients as
        ``nn.GRU`` up to float rounding, 2-4x faster there (``benchmarks/gru_backprop.py``).

        Returns ``(mean, logvar, hidden)`` of shape ``[N, T + 1, ...]`` with the prior at index 0
        when ``with_prior`` (the default), else ``[N, T, ...]``.
        """
        if detach_every is not None and (
            isinstance(detach_every, bool) or not isinstance(detach_every, int) or detach_every < 1
        ):
            raise ValueError(
                f"BeliefEncoder.sequence: detach_every must be None or an int >= 1 "
                f"(got {detach_every!r})"
            )
        n = actions.shape[0]
        if hidden is None:
            hidden = self.initial_hidden(n, device=next_obs.device)
        x = self.embed(actions, rewards, next_obs, done)
        if detach_every is None or detach_every >= x.shape[1]:
            out, _ = gru_sequence(self.gru, x, hidden.unsqueeze(0).contiguous())
        else:
            h = hidden.unsqueeze(0).contiguous()
            chunks = []
            for chunk in x.split(detach_every, dim=1):
                chunk_out, h = gru_sequence(self.gru, chunk, h)
                chunks.append(chunk_out)
                h = h.detach()
            out = torch.cat(chunks, dim=1)
        mean, logvar = self._heads(out)
        if with_prior:
            prior_mean, prior_logvar = self.prior(n, 1, device=out.device)
            mean = torch.cat([prior_mean, mean], dim=1)
            logvar = torch.cat([prior_logvar, logvar], dim=1)
            out = torch.cat([hidden.unsqueeze(1), out], dim=1)
        return mean, logvar, out

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Alias of :meth:`step`."""
        return self.step(*args)
