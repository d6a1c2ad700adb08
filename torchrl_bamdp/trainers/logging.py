"""Metrics logging: an append-only CSV always, Weights & Biases through TorchRL when asked."""

from __future__ import annotations

import csv
import http.client
import io
import os
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from torchrl_bamdp.configs.schema import Config, config_to_dict
from torchrl_bamdp.utils import atomic_write_text

CSV_HEADER = ("iteration", "frames", "metric", "value")

#: Seconds the HTTP probe of the W&B server may take before an online run falls back to offline.
WANDB_PROBE_TIMEOUT_S = 5.0
#: ``wandb.init`` timeout of an online run unless ``WANDB_INIT_TIMEOUT`` is set (W&B's own: 90).
WANDB_INIT_TIMEOUT_S = 30.0
#: Upload wait of ``wandb.finish`` unless ``WANDB_FINISH_TIMEOUT`` is set (W&B's own: forever).
WANDB_FINISH_TIMEOUT_S = 60.0


def wandb_base_url() -> str:
    """The W&B server this process would talk to: ``WANDB_BASE_URL``, else W&B's settings.

    Examples
    --------
    >>> import os
    >>> os.environ["WANDB_BASE_URL"] = "http://127.0.0.1:9"
    >>> wandb_base_url()
    'http://127.0.0.1:9'
    >>> del os.environ["WANDB_BASE_URL"]
    """
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url
    import wandb

    try:  # settings files (`wandb login --host`), environment and W&B's default
        return str(wandb.setup().settings.base_url)
    except Exception:  # any failure here only means: use the default
        return str(wandb.Settings().base_url)


def probe_server(url: str, timeout: float = WANDB_PROBE_TIMEOUT_S) -> str | None:
    """Whether the HTTP(S) server at ``url`` answers a ``GET <url>/healthz`` within ``timeout``.

    Any HTTP answer counts (even an error status); no answer, a refused connection, a failed
    name lookup or TLS handshake do not. Proxies are honoured as W&B honours them
    (``HTTPS_PROXY``, ``NO_PROXY``, ...). The request runs in a daemon thread, so a hanging name
    lookup or a server that accepts the connection and never answers cannot block the caller
    longer than ``timeout``.

    Parameters
    ----------
    url : str
        ``http(s)://host[:port][/path]``.
    timeout : float
        Seconds to wait in all.

    Returns
    -------
    str or None
        ``None`` when the server answered, else why it did not (one line).

    Examples
    --------
    >>> import socket
    >>> with socket.socket() as s:  # a loopback port with nothing listening
    ...     s.bind(("127.0.0.1", 0))
    ...     port = s.getsockname()[1]
    >>> probe_server(f"http://127.0.0.1:{port}", timeout=2)
    'ConnectionRefusedError: [Errno 111] Connection refused'
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"invalid W&B server URL {url!r}"
    outcome: list[str | None] = []

    def request() -> None:
        probe = urllib.request.Request(
            url.rstrip("/") + "/healthz", headers={"User-Agent": "torchrl_bamdp-probe"}
        )
        try:
            with urllib.request.urlopen(probe, timeout=timeout):
                pass
            outcome.append(None)
        except urllib.error.HTTPError:  # an HTTP answer: the server is there
            outcome.append(None)
        except (OSError, ValueError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError):  # the same as the join below running out
                outcome.append(f"no answer within {timeout:g} s")
            else:
                outcome.append(f"{type(reason).__name__}: {reason}".replace("\n", " "))

    thread = threading.Thread(target=request, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


class MetricsLogger:
    """Log scalar metrics to ``<run_dir>/metrics.csv`` and, optionally, to W&B.

    The CSV is long-format (``iteration, frames, metric, value``). Each :meth:`log` call appends
    all rows of one iteration with a single ``write`` and closes the file, so a killed run keeps
    every iteration it logged; a line torn by a crash is dropped when the logger is opened
    again, and :meth:`truncate_after` drops rows newer than the checkpoint a resumed run
    restarts from, so no iteration is logged twice. With ``logger.backend=wandb`` metrics also
    go to a ``torchrl.record.loggers.WandbLogger`` whose run id is kept in
    ``<run_dir>/wandb_id.txt``, so a resumed run continues the same W&B run.

    **W&B modes and the network.** ``logger.mode`` decides (the ``WANDB_MODE`` environment
    variable does not override it):

    * ``offline`` (default) and ``disabled`` never use the network.
    * ``online`` never hangs and never stops training for lack of a network:

      1. Before ``wandb.init`` the logger sends one ``GET <server>/healthz`` to the W&B server
         (``WANDB_BASE_URL``, else W&B's configured host; proxies honoured) and waits at most
         :data:`WANDB_PROBE_TIMEOUT_S` (5 s) for any HTTP answer.
      2. If it answered, ``wandb.init`` runs online with ``init_timeout`` =
         :data:`WANDB_INIT_TIMEOUT_S` (30 s; ``WANDB_INIT_TIMEOUT`` overrides it). W&B gives up
         some 10 s after that timeout, and its shutdown then takes a few more seconds.
      3. If the server did not answer, or ``wandb.init`` failed for any reason (timeout, no
         API key, refused login), the run **falls back to offline W&B logging** in
         ``<run_dir>/wandb`` (same run id) and prints one warning to stderr that starts with
         ``bamdp: W&B online logging unavailable:``, gives the reason and the ``wandb sync``
         command that uploads the run later. Training and the CSV are unaffected.

      :attr:`wandb_mode` tells which mode is in use, :attr:`wandb_fallback_reason` why online
      was given up. With the network down the fallback costs well under a second (no route,
      refused connection, failed name lookup) and at most 5 s (packets silently dropped).
      At the end, ``wandb.finish`` waits at most :data:`WANDB_FINISH_TIMEOUT_S` (60 s;
      ``WANDB_FINISH_TIMEOUT`` overrides it) for uploads if the network went away mid-run;
      what was not uploaded stays on disk for ``wandb sync``.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    config : Config
        The run config (logged as W&B config; names the run and its group).

    Attributes
    ----------
    wandb_mode : str or None
        ``"online"``, ``"offline"`` or ``"disabled"`` with the W&B backend, else ``None``.
    wandb_fallback_reason : str or None
        Why an online run logs offline (``None`` when it did not fall back).

    Examples
    --------
    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> log = MetricsLogger(Path(tempfile.mkdtemp()), load_config({}))
    >>> log.log({"ppo/loss": 1.5}, step=960, iteration=1)
    >>> log.read()[0]["metric"]
    'ppo/loss'
    """

    #: Class-level knobs (seconds), e.g. for tests; see the module constants.
    probe_timeout_s = WANDB_PROBE_TIMEOUT_S

    def __init__(self, run_dir: Path, config: Config) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self._open_csv()
        self.wandb = None
        self.wandb_mode: str | None = None
        self.wandb_fallback_reason: str | None = None
        if config.logger.backend == "wandb":
            self.wandb = self._make_wandb(config)

    # -- CSV --------------------------------------------------------------------------------
    def _open_csv(self) -> None:
        """Create the CSV with its header, or repair the tail a crash may have torn."""
        if self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            with self.csv_path.open("rb+") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    # A torn last line (a crash mid-write): cut back to the last complete row.
                    f.seek(0)
                    f.truncate(f.read().rfind(b"\n") + 1)
        if not self.csv_path.exists() or self.csv_path.stat().st_size == 0:
            # Missing, or emptied by a kill between creating the file and writing the header.
            buf = io.StringIO()
            csv.writer(buf).writerow(CSV_HEADER)
            atomic_write_text(self.csv_path, buf.getvalue())

    def log(self, metrics: dict[str, float], step: int, iteration: int) -> None:
        """Write one iteration's metrics (``step`` = frames collected so far).

        Examples
        --------
        >>> import tempfile
        >>> from torchrl_bamdp.configs import load_config
        >>> log = MetricsLogger(Path(tempfile.mkdtemp()), load_config({}))
        >>> log.log({"a": 1.0, "b": 2.0}, step=240, iteration=1)
        >>> [(r["iteration"], r["frames"], r["metric"]) for r in log.read()]
        [(1, 240, 'a'), (1, 240, 'b')]
        """
        buf = io.StringIO()
        writer = csv.writer(buf)
        for name, value in metrics.items():
            writer.writerow((iteration, step, name, float(value)))
        with self.csv_path.open("a", newline="") as f:
            f.write(buf.getvalue())  # one write: a kill leaves whole iterations or a torn tail
        if self.wandb is not None:
            # One W&B history row per iteration; TorchRL's WandbLogger adds a "<group>/step"
            # (frames) per metric group, so every group can be plotted against frames.
            self.wandb.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_images(self, images: dict[str, str | Path], step: int) -> None:
        """Log image files (figures already saved in the run directory) to W&B as images.

        Without the W&B backend this does nothing: the files are the record.
        """
        if self.wandb is None or not images:
            return
        import wandb

        payload = {name: wandb.Image(str(path)) for name, path in images.items()}
        self.wandb.log_metrics(payload, step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """Log a table (e.g. the per-episode meta-test returns) to W&B as a ``wandb.Table``.

        Without the W&B backend this does nothing (``eval.jsonl`` holds the same numbers).
        """
        if self.wandb is None:
            return
        import wandb

        self.wandb.log_metrics({name: wandb.Table(columns=columns, data=rows)}, step=step)

    def read(self) -> list[dict]:
        """All rows of the CSV as dicts (numbers parsed).

        An unfinished last line (no newline: a write torn by a crash) is skipped; a complete row
        that does not parse raises ``ValueError`` naming its line.

        Examples
        --------
        >>> import tempfile
        >>> from torchrl_bamdp.configs import load_config
        >>> log = MetricsLogger(Path(tempfile.mkdtemp()), load_config({}))
        >>> log.read()
        []
        """
        with self.csv_path.open(newline="") as f:
            text = f.read()
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # torn tail
        rows = []
        for n, row in enumerate(csv.DictReader(io.StringIO(text, newline=""))):
            try:
                rows.append(
                    {
                        "iteration": int(row["iteration"]),
                        "frames": int(row["frames"]),
                        "metric": str(row["metric"]),
                        "value": float(row["value"]),
                    }
                )
            except (TypeError, ValueError) as err:
                raise ValueError(f"{self.csv_path}: malformed row on line {n + 2}: {row}") from err
        return rows

    def truncate_after(self, iteration: int) -> None:
        """Drop rows of iterations after ``iteration`` (those a resumed run will redo).

        Examples
        --------
        >>> import tempfile
        >>> from torchrl_bamdp.configs import load_config
        >>> log = MetricsLogger(Path(tempfile.mkdtemp()), load_config({}))
        >>> for i in (1, 2, 3):
        ...     log.log({"x": float(i)}, step=240 * i, iteration=i)
        >>> log.truncate_after(2)
        >>> [r["iteration"] for r in log.read()]
        [1, 2]
        """
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_HEADER)
        for r in self.read():
            if r["iteration"] <= iteration:
                writer.writerow((r["iteration"], r["frames"], r["metric"], r["value"]))
        atomic_write_text(self.csv_path, buf.getvalue())

    # -- W&B --------------------------------------------------------------------------------
    def _run_id(self) -> str:
        id_file = self.run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if not run_id:  # missing, or emptied by a crash while it was written
            run_id = uuid.uuid4().hex[:12]
            atomic_write_text(id_file, run_id)
        return run_id

    def _make_wandb(self, config: Config):
        mode = config.logger.mode
        if mode == "online":
            reason = None
            url = wandb_base_url()
            problem = probe_server(url, self.probe_timeout_s)
            if problem is not None:
                reason = f"cannot reach the W&B server {url} ({problem})"
            if reason is None:
                try:
                    logger = self._wandb_logger(config, "online")
                    self.wandb_mode = "online"
                    return logger
                except Exception as err:  # any failure: keep training, offline
                    self._finish_failed_init()
                    lines = str(err).strip().splitlines() or [""]
                    reason = f"wandb.init failed: {type(err).__name__}: {lines[0].rstrip('.')}"
            self.wandb_fallback_reason = reason
            mode = "offline"
            print(
                f"bamdp: W&B online logging unavailable: {reason}. Logging to W&B offline in "
                f"{self.run_dir / 'wandb'} instead; upload it later with "
                f"`wandb sync {self.run_dir / 'wandb'}/offline-run-*`. "
                "Training continues; metrics.csv is written as always.",
                file=sys.stderr,
                flush=True,
            )
        logger = self._wandb_logger(config, mode)
        self.wandb_mode = mode
        return logger

    def _wandb_logger(self, config: Config, mode: str):
        import wandb
        from torchrl.record.loggers import WandbLogger

        name = f"{config.env.name}-{config.algo.name}-seed{config.seed}"
        group = config.logger.group or f"{config.env.name}-{config.algo.name}"
        # An explicit mode: W&B freezes its environment variables at its first setup, so
        # WANDB_MODE (which torchrl sets for offline runs) cannot be relied on in one process.
        kwargs = {"group": group, "config": config_to_dict(config), "mode": mode}
        if mode == "online":
            settings = {}
            if not os.environ.get("WANDB_INIT_TIMEOUT"):
                settings["init_timeout"] = WANDB_INIT_TIMEOUT_S
            if not os.environ.get("WANDB_FINISH_TIMEOUT"):
                settings["finish_timeout"] = WANDB_FINISH_TIMEOUT_S
            kwargs["settings"] = wandb.Settings(**settings)
        return WandbLogger(
            exp_name=name,
            offline=mode != "online",
            # Absolute: a W&B service shared with a parent process resolves relative paths
            # against its own working directory, not this process's.
            save_dir=str(self.run_dir.resolve()),
            id=self._run_id(),
            project=config.logger.project,
            log_env_packages=False,
            **kwargs,
        )

    @staticmethod
    def _finish_failed_init() -> None:
        """Close what a failed ``wandb.init`` left open before the offline attempt.

        The W&B service process still holds the run id after a timed-out init ("run ID ... is
        in use"); ``wandb.teardown`` stops it, and the offline init starts a fresh one.
        """
        import wandb

        try:
            if wandb.run is not None:
                wandb.finish(exit_code=1)
            wandb.teardown(exit_code=1)
        except Exception:  # best effort
            pass

    def close(self) -> None:
        """Make the logs complete on disk: fsync the CSV, finish the W&B run and flush it.

        When this returns, ``metrics.csv`` is on disk and so is every record of the W&B run.
        ``wandb.finish`` alone does not promise the latter: the W&B service process writes the
        run's ``.wandb`` file asynchronously, and under CPU load a reader right after
        ``finish`` found only its 7-byte header. So, unless another W&B run is still active in
        this process, the W&B service is also shut down (``wandb.teardown``, which waits for
        the service process to exit, having closed its files); the next run starts a new one.

        Examples
        --------
        >>> import tempfile
        >>> from torchrl_bamdp.configs import load_config
        >>> MetricsLogger(Path(tempfile.mkdtemp()), load_config({})).close()
        """
        with self.csv_path.open("rb") as f:
            os.fsync(f.fileno())
        if self.wandb is not None:
            import wandb

            run = getattr(self.wandb, "experiment", None)
            if run is not None:
                run.finish()
            elif wandb.run is not None:
                wandb.finish()
            if wandb.run is None:
                wandb.teardown()
            self.wandb = None
            self.wandb = None
