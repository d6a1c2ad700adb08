"""Policies that act without being trained: the references every learned agent is measured by.

===========================  ===================================================================
module                       what it holds
===========================  ===================================================================
:mod:`.bayes_optimal`        the exact Bayes-optimal GridNavi solver (:class:`GridNaviSpec`,
                             :class:`BayesOptimalGridNavi`, dynamic programming) and
                             :class:`BayesOptimalPolicy`, that solver as a TorchRL policy
:mod:`.uniform_random`       :func:`uniform_random_policy`, seeded uniform discrete actions;
                             :func:`uniform_box_policy`, seeded uniform continuous (box) actions
===========================  ===================================================================

Learned policies are nn building blocks and live in :mod:`torchrl_bamdp.modules`
(``actor_critic``); the algorithms ``bayes_optimal`` and ``random`` wrap these policies as agents
(``trainers/agents.py``), and the evaluation runs them as references (``evaluation/``). This
package sits below both: it imports only ``envs`` and ``transforms``.
"""

from torchrl_bamdp.policies.bayes_optimal import (
    ACTION_MOVES,
    BayesOptimalGridNavi,
    BayesOptimalPolicy,
    GridNaviSpec,
)
from torchrl_bamdp.policies.uniform_random import uniform_box_policy, uniform_random_policy

__all__ = [
    "ACTION_MOVES",
    "BayesOptimalGridNavi",
    "BayesOptimalPolicy",
    "GridNaviSpec",
    "uniform_box_policy",
    "uniform_random_policy",
]
