"""Task-distribution environments and the BAMDP horizon."""

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.gridworld import GridNaviEnv, candidate_goal_cells
from torchrl_bamdp.envs.task_env import TaskEnv

__all__ = ["BAMDPEnv", "GridNaviEnv", "TaskEnv", "candidate_goal_cells"]
