"""No network needed: an online W&B run with the W&B server unreachable never hangs.

Documented behaviour (``MetricsLogger``): ``logger=wandb logger.mode=online`` with the W&B
server unreachable, or with ``wandb.init`` failing or timing out, falls back to offline W&B
logging with one warning on stderr (``bamdp: W&B online logging unavailable: ...``), within a
bounded time, and trains to the end with a complete CSV.

Nothing leaves the machine: the "W&B server" is ``WANDB_BASE_URL=http://127.0.0.1:<port>``,
served on loopback by the test: a closed port (connection refused: the network is down), a
socket that accepts connections and never answers (packets dropped), or an HTTP server that
answers the health probe but never W&B's API (a broken server). Proxies are removed from the
environment.
"""

from __future__ import annotations

import contextlib
import csv
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from torchrl_bamdp.trainers.logging import probe_server

pytest.importorskip("wandb")

BIN = Path(sys.executable).parent
TRAIN = BIN / "bamdp-train"
ITERATIONS = 2
FALLBACK = "bamdp: W&B online logging unavailable"
#: Startup, a 2-iteration run and the fallback must fit in this (W&B's own init waits 90 s).
BOUND_S = 60


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def online_run(tmp_path: Path, base_url: str, **env_extra: str):
    """``bamdp-train logger=wandb logger.mode=online`` against ``base_url``; (proc, seconds)."""
    run_dir = tmp_path / "run"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WANDB_") and k.lower() not in {"https_proxy", "http_proxy"}
    }
    env.pop("ALL_PROXY", None)
    home = tmp_path / "wandb_home"
    env.update(
        WANDB_BASE_URL=base_url,
        # A syntactically plausible key, so W&B gets as far as talking to the server.
        WANDB_API_KEY=env_extra.pop("WANDB_API_KEY", "local-" + "0" * 40),
        WANDB_CONFIG_DIR=str(home),
        WANDB_CACHE_DIR=str(home),
        WANDB_DATA_DIR=str(home),
        WANDB_DISABLE_GIT="true",
        WANDB_CONSOLE="off",
        # No system metadata or metrics probes (e.g. the cloud metadata address 169.254.169.254)
        WANDB__DISABLE_STATS="true",
        WANDB__DISABLE_META="true",
        WANDB__DISABLE_MACHINE_INFO="true",
        WANDB__STATS_COREWEAVE_METADATA_BASE_URL=f"http://127.0.0.1:{closed_port()}",
        NO_PROXY="127.0.0.1,localhost",
        HYDRA_FULL_ERROR="1",
        **env_extra,
    )
    args = [
        "logger=wandb",
        "logger.mode=online",
        "logger.project=bamdp-tests",
        "env.num_envs=4",
        f"train.total_frames={240 * ITERATIONS}",
        "train.eval_interval=1",
        "train.eval_tasks=21",
        "train.checkpoint_interval=1",
        "train.progress_bar=false",
        "train.figures=false",
        f"run_dir={run_dir}",
    ]
    start = time.monotonic()
    proc = subprocess.run(
        [str(TRAIN), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND_S + 60,
        check=False,
    )
    return proc, time.monotonic() - start, run_dir


def check_fell_back_offline(proc, seconds: float, run_dir: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # No wall-clock bound here (a loaded machine must not fail the suite): each test asserts
    # the reason the logger gave up, which shows what bounded the wait (the 5 s probe, or the
    # init timeout), and the subprocess timeout (BOUND_S + 60) still catches a real hang.
    assert FALLBACK in proc.stderr, out
    assert "wandb sync" in proc.stderr
    assert f"{240 * ITERATIONS} frames" in proc.stdout
    # the CSV is complete
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = Counter((int(r["iteration"]), r["metric"]) for r in rows)
    assert max(keys.values()) == 1
    assert sorted({i for i, _ in keys}) == list(range(1, ITERATIONS + 1))
    for i in range(1, ITERATIONS + 1):
        assert (i, "ppo/loss_objective") in keys and (i, "eval/return_total") in keys
    # ... and the metrics went to an offline W&B run, ready for `wandb sync`
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert offline and offline[0].stat().st_size > 0, list((run_dir / "wandb").rglob("*"))
    assert b"ppo/loss_objective" in offline[0].read_bytes()


@pytest.mark.timeout(BOUND_S + 90)
def test_online_with_server_refusing_falls_back_to_offline(tmp_path):
    port = closed_port()
    proc, seconds, run_dir = online_run(tmp_path, f"http://127.0.0.1:{port}")
    check_fell_back_offline(proc, seconds, run_dir)
    assert "cannot reach the W&B server" in proc.stderr
    print(f"online run, server refusing: {seconds:.1f} s")


class _HangingGraphQL(http.server.BaseHTTPRequestHandler):
    """Answers GETs (the health probe) and 404s, but never answers W&B's GraphQL API."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):  # noqa: N802
        if self.path.startswith("/graphql"):
            self.server.release.wait(BOUND_S + 60)  # hang (until the test ends)
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def hanging_wandb_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HangingGraphQL)
    server.daemon_threads = True
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(BOUND_S + 90)
def test_online_with_server_hanging_falls_back_within_init_timeout(tmp_path):
    """The server answers the probe but not W&B's requests: ``init_timeout`` bounds the wait."""
    with hanging_wandb_server() as url:
        proc, seconds, run_dir = online_run(tmp_path, url, WANDB_INIT_TIMEOUT="5")
    check_fell_back_offline(proc, seconds, run_dir)
    assert "wandb.init failed" in proc.stderr
    print(f"online run, server hanging: {seconds:.1f} s")


@pytest.mark.timeout(BOUND_S + 90)
def test_online_with_server_silent_falls_back_after_the_probe(tmp_path):
    """A server that accepts connections and never answers: the 5 s probe gives up."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        port = silent.getsockname()[1]
        proc, seconds, run_dir = online_run(tmp_path, f"http://127.0.0.1:{port}")
    check_fell_back_offline(proc, seconds, run_dir)
    assert "no answer within" in proc.stderr
    print(f"online run, server silent: {seconds:.1f} s")


# -- the probe itself (in process, loopback only) -----------------------------------------------
def test_probe_gives_up_on_a_silent_server_in_time():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        start = time.monotonic()
        problem = probe_server(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1)
        assert problem == "no answer within 1 s"
        assert time.monotonic() - start < 2


def test_probe_reports_a_refused_connection_quickly():
    start = time.monotonic()
    problem = probe_server(f"http://127.0.0.1:{closed_port()}", timeout=5)
    assert problem is not None and "Refused" in problem
    assert time.monotonic() - start < 2


def test_probe_accepts_any_http_answer():
    with hanging_wandb_server() as url:
        assert probe_server(url, timeout=5) is None


def test_probe_rejects_a_url_without_host():
    assert "invalid" in probe_server("not a url", timeout=1)
