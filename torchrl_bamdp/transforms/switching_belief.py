"""The exact GridNavi goal posterior when the goal switches at random times (issue 20, item 2).

Under :class:`~torchrl_bamdp.envs.SwitchingBAMDPEnv` the goal follows a hidden Markov chain: after
every step it is redrawn from the prior with probability ``h`` (the hazard), so
``p(m' | m) = (1 - h) * 1[m' = m] + h * prior(m')``. The reward of a step is deterministic given
the goal in force and the cell landed in (``goal_reward`` on the goal, the step penalty elsewhere,
as :class:`~torchrl_bamdp.envs.GridNaviEnv`), so the exact posterior is the HMM forward filter:

* **update** (Bayes, with the likelihood of the observed (cell, reward)): keep the goals
  consistent with it (only the landing cell after a goal reward, every goal but it otherwise)
  and renormalise: ``f(g) ∝ b(g) * L(cell, r | g)``;
* **predict** (the switch drawn after the step): ``b'(g) = (1 - h) * f(g) + h * prior(g)``.

Two beliefs are written, both over the ``grid_size ** 2`` cells (flat index ``x * grid_size + y``,
0 off the candidate goals):

* :data:`~torchrl_bamdp.transforms.BELIEF_PROBS` (``("belief", "probs")``): ``b``, the belief
  over the goal *in force now*, the one that will produce the next reward, i.e. over the same
  tensordict's ``task``. It is what a policy needs, so it is the hyper-state's belief (the same
  key as :class:`~torchrl_bamdp.transforms.ExactGridBelief`: a policy trained on that belief
  reads this one unchanged).
* :data:`BELIEF_FILTERED` (``("belief", "filtered")``): ``f``, the filtering posterior over the
  goal that produced the *latest* reward (the previous step's ``task``); the prior at a reset.
  Read the other way round, ``f`` is the textbook forward recursion (predict with the switch
  since the last step, then update): ``f_{t+1} ∝ L_{t+1} * ((1 - h) f_t + h prior)``, and
  ``b_t = (1 - h) f_t + h prior``. With ``h = 0`` both equal ExactGridBelief's posterior.

Privileged
----------
Nothing here reads the privileged ``task`` or ``task_switched`` keys: the belief is computed from
the position, the action and the reward only, and the hazard (a property of the task
distribution, like the prior, known to a Bayes-optimal agent). Tests compare it against ``task``;
a policy never should.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Bounded, Composite
from torchrl.envs import EnvBase
from torchrl.envs.transforms import Compose

from torchrl_bamdp.envs.switching import SwitchingBAMDPEnv
from torchrl_bamdp.transforms.exact_belief import (
    BELIEF_PROBS,
    ExactGridBelief,
    grid_belief_hyper_state,
)

__all__ = ["BELIEF_FILTERED", "SwitchingGridBelief", "find_hazard", "switching_belief_transforms"]

#: The filtering posterior over the goal that produced the latest reward.
BELIEF_FILTERED: tuple[str, str] = ("belief", "filtered")


def find_hazard(env: EnvBase) -> float:
    """The hazard of the :class:`~torchrl_bamdp.envs.SwitchingBAMDPEnv` inside ``env``.

    Raises
    ------
    TypeError
        If there is none (a plain BAMDP: use :class:`ExactGridBelief`, or pass ``hazard``).

    Examples
    --------
    >>> from torchrl_bamdp.envs import make_switching_env
    >>> find_hazard(make_switching_env(num_envs=2, horizon=10, hazard=0.1))
    0.1
    """
    current = env
    for _ in range(64):
        if isinstance(current, SwitchingBAMDPEnv):
            return current.hazard
        if not hasattr(current, "base_env"):
            break
        current = current.base_env
    raise TypeError(
        f"no SwitchingBAMDPEnv inside {type(env).__name__}: pass hazard= explicitly (or use "
        "ExactGridBelief for a task that never switches)"
    )


class SwitchingGridBelief(ExactGridBelief):
    """Carry the exact GridNavi goal posterior under the switching prior (HMM forward filter).

    On reset (a new rollout) both beliefs are the prior, uniform over the candidate goals. On
    every step the landing cell is computed from the current position and the action (as
    :class:`ExactGridBelief`), the belief is updated with the (cell, reward) likelihood into
    :data:`BELIEF_FILTERED`, and the switch is predicted into ``("belief", "probs")``.

    Unlike ExactGridBelief's, the posterior is not a restriction of the prior (a goal ruled out
    can come back after a switch), so it is carried step to step and renormalised every step.
    With ``hazard > 0`` every candidate keeps at least ``hazard / G`` of the mass, so GridNavi
    data can never rule everything out.

    Parameters
    ----------
    hazard : float
        Per-step probability in ``[0, 1]`` that the goal is redrawn from the prior.
    grid_size, goal_reward, candidates, action_key, reward_key, observation_key
        As :class:`ExactGridBelief` (candidates are equally likely under the prior).

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_switching_env
    >>> base = make_switching_env(num_envs=2, horizon=20, hazard=0.1, seed=0)
    >>> env = TransformedEnv(base, SwitchingGridBelief.from_env(base))
    >>> td = env.reset()
    >>> td["action"] = torch.full((2,), 2)  # right: lands on (1, 0), never a goal
    >>> td = env.step(td)
    >>> probs = td["next", "belief", "probs"]
    >>> probs.shape, round(probs.sum(-1)[0].item(), 6)
    (torch.Size([2, 25]), 1.0)
    """

    def __init__(
        self,
        hazard: float,
        grid_size: int = 5,
        goal_reward: float = 1.0,
        candidates: torch.Tensor | None = None,
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        observation_key: NestedKey = "observation",
    ) -> None:
        hazard = float(hazard)
        if not 0.0 <= hazard <= 1.0:
            raise ValueError(f"hazard must be a probability in [0, 1] (got {hazard})")
        super().__init__(
            grid_size=grid_size,
            goal_reward=goal_reward,
            candidates=candidates,
            action_key=action_key,
            reward_key=reward_key,
            observation_key=observation_key,
        )
        self.hazard = hazard
        self.out_keys = [BELIEF_PROBS, BELIEF_FILTERED]

    @classmethod
    def from_env(cls, env: EnvBase, hazard: float | None = None, **kwargs) -> SwitchingGridBelief:
        """Build the transform matching the switching GridNavi env inside ``env``.

        Grid size, goal reward and candidates come from the GridNavi env, ``hazard`` (unless
        given) from the :class:`~torchrl_bamdp.envs.SwitchingBAMDPEnv` (:func:`find_hazard`).

        Examples
        --------
        >>> from torchrl_bamdp.envs import make_switching_env
        >>> env = make_switching_env(num_envs=2, horizon=10, hazard=0.2, grid_size=3)
        >>> t = SwitchingGridBelief.from_env(env)
        >>> t.hazard, t.num_cells
        (0.2, 9)
        """
        if hazard is None:
            hazard = find_hazard(env)
        return super().from_env(env, hazard=hazard, **kwargs)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        tensordict_reset = super()._reset(tensordict, tensordict_reset)
        tensordict_reset.set(BELIEF_FILTERED, tensordict_reset.get(BELIEF_PROBS).clone())
        return tensordict_reset

    def filter(
        self,
        probs: torch.Tensor,
        position: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
    ) -> torch.Tensor:
        """The Bayes update of ``[*batch, N*N]`` beliefs over the goal in force by one step.

        Parameters
        ----------
        probs : torch.Tensor
            The belief over the goal in force before the step (``("belief", "probs")``).
        position, action : torch.Tensor
            The position the step started from and the action (see :meth:`landing_cell`).
        reward : torch.Tensor
            ``[*batch, 1]`` (or ``[*batch]``) reward of the step.

        Raises
        ------
        ValueError
            If the data rule out every goal the belief allows (only possible with ``hazard=0``
            or data that are not GridNavi's).

        Examples
        --------
        >>> t = SwitchingGridBelief(hazard=0.5, grid_size=3)
        >>> prior = t.prior.expand(1, 9)
        >>> t.filter(prior, torch.tensor([[0.0, 1.0]]), torch.tensor([1]), torch.tensor([[1.0]]))
        tensor([[0., 0., 1., 0., 0., 0., 0., 0., 0.]])
        """
        likelihood = self.consistent_goals(probs, position, action, reward)
        # The support mask keeps rounding from ever leaking mass off the candidate goals.
        support = self.prior.to(probs.device) > 0
        unnormalised = probs * (likelihood & support)
        total = unnormalised.sum(-1, keepdim=True)
        empty = total.squeeze(-1) <= 0
        if bool(empty.any()):
            envs = empty.nonzero().tolist()
            raise ValueError(
                f"{type(self).__name__}: the rewards rule out every goal the belief allows in "
                f"env(s) {envs[:10]}{' ...' if len(envs) > 10 else ''} (batch indices): "
                f"hazard={self.hazard} and these data are not GridNavi data with this grid, goal "
                "reward and candidate set"
            )
        return unnormalised / total

    def predict(self, filtered: torch.Tensor) -> torch.Tensor:
        """The belief over the next goal: ``(1 - h) * filtered + h * prior``.

        Examples
        --------
        >>> t = SwitchingGridBelief(hazard=0.5, grid_size=3)
        >>> t.predict(torch.tensor([[0.0, 0, 1, 0, 0, 0, 0, 0, 0]]))
        tensor([[0.0000, 0.0000, 0.6000, 0.0000, 0.0000, 0.1000, 0.1000, 0.1000, 0.1000]])
        """
        return (1.0 - self.hazard) * filtered + self.hazard * self.prior.to(filtered.device)

    def update(
        self,
        probs: torch.Tensor,
        position: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
    ) -> torch.Tensor:
        """One step of the filter: :meth:`filter`, then :meth:`predict` (the next belief).

        Arguments as :meth:`filter`; this is what the transform writes as
        ``("next", "belief", "probs")``, so it replays stored trajectories step by step.

        Examples
        --------
        >>> t = SwitchingGridBelief(hazard=0.0, grid_size=3)
        >>> prior = t.prior.expand(1, 9)
        >>> t.update(prior, torch.tensor([[0.0, 1.0]]), torch.tensor([1]), torch.tensor([[-0.1]]))
        tensor([[0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.2500, 0.2500, 0.2500, 0.2500]])
        """
        return self.predict(self.filter(probs, position, action, reward))

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        probs = tensordict.get(BELIEF_PROBS, None)
        if probs is None:
            raise KeyError(
                f"{type(self).__name__}: no {BELIEF_PROBS} in the input tensordict; step from a "
                "tensordict returned by env.reset() (or a collector), not a hand-made one."
            )
        position = self._get(tensordict, self.observation_key, "root")
        action = self._get(tensordict, self.action_key, "root")
        reward = self._get(next_tensordict, self.reward_key, "next")
        filtered = self.filter(probs, position, action, reward)
        next_tensordict.set(BELIEF_FILTERED, filtered)
        next_tensordict.set(BELIEF_PROBS, self.predict(filtered))
        return next_tensordict

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        observation_spec = super().transform_observation_spec(observation_spec)
        observation_spec[BELIEF_FILTERED] = Bounded(
            0.0,
            1.0,
            shape=(*self.parent.batch_size, self.num_cells),
            dtype=torch.float32,
            device=observation_spec.device,
        )
        return observation_spec


def switching_belief_transforms(
    hazard: float,
    grid_size: int = 5,
    goal_reward: float = 1.0,
    candidates: torch.Tensor | None = None,
    action_key: NestedKey = "action",
    reward_key: NestedKey = "reward",
    observation_key: NestedKey = "observation",
    out_key: NestedKey = "hyper_state",
) -> Compose:
    """The switching posterior followed by ``hyper_state = [observation, probs]``.

    The same hyper-state layout as :func:`~torchrl_bamdp.transforms.exact_belief_transforms`
    (the filtered belief is not in it), so a policy built for the exact belief reads this one.
    Arguments as :class:`SwitchingGridBelief`; ``out_key`` names the hyper-state.

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_switching_env
    >>> base = make_switching_env(num_envs=2, horizon=20, hazard=0.05)
    >>> env = TransformedEnv(base, switching_belief_transforms(hazard=0.05))
    >>> env.reset()["hyper_state"].shape
    torch.Size([2, 27])
    """
    belief = SwitchingGridBelief(
        hazard=hazard,
        grid_size=grid_size,
        goal_reward=goal_reward,
        candidates=candidates,
        action_key=action_key,
        reward_key=reward_key,
        observation_key=observation_key,
    )
    return grid_belief_hyper_state(belief, observation_key, out_key)
