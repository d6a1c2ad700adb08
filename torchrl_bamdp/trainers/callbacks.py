"""What happens beside the training loop: the progress bar and the run's figures.

The loop in :class:`~torchrl_bamdp.trainers.Trainer` calls these; they read the trainer's
state and write nothing it depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ProgressBar:
    """A tqdm bar over ``train.total_frames`` with the fps and the latest test return, or
    nothing at all with ``train.progress_bar=false``.

    Examples
    --------
    >>> bar = ProgressBar(total=1000, initial=0, enabled=False)
    >>> bar.update(100, fps=50.0, test_return=None)
    >>> bar.close()
    """

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=initial, unit="frames", unit_scale=True, dynamic_ncols=True
            )

    def update(self, frames: int, fps: float, test_return: float | None) -> None:
        if self.bar is None:
            return
        self.bar.update(frames)
        postfix = {"fps": f"{fps:.0f}"}
        if test_return is not None:
            postfix["test_return"] = f"{test_return:.2f}"
        self.bar.set_postfix(postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_run_figures(trainer: Any) -> list[Path]:
    """A run's figures in ``<run_dir>/figures`` (PNG + PDF), also logged to its logger.

    The learning curve and the per-episode returns of the latest evaluation; where the task
    family declares them (``TaskFamily.figures``: GridNavi) also the belief rollout (Fig 3a) and
    the latent trace (Fig 3b) on the test task with goal ``train.figure_goal``.
    """
    from torchrl_bamdp.evaluation.report import (
        aggregate,
        bayes_optimal_returns,
        last_eval_report,
        write_figures,
    )

    config = trainer.config
    out = trainer.run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    aggregated = aggregate([last_eval_report(trainer.run_dir)])
    episodes = len(trainer.last_eval["mean"])
    grid = config.env.grid_size
    default_goal = (grid - 1, grid // 2) if grid is not None else None  # GridNavi's figures
    written = write_figures(
        aggregated,
        out,
        optimal=bayes_optimal_returns(config, episodes),
        rollout_goal=config.train.figure_goal or default_goal,
        trainers={str(trainer.run_dir): trainer},
    )
    pngs = {f"figures/{p.stem}": p for p in written if p.suffix == ".png"}
    trainer.logger.log_images(pngs, step=trainer.frames)
    return written
