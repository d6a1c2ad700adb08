"""``torchrl_bamdp.utils.run_jobs``: the benchmark scripts' pool of training processes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from torchrl_bamdp.utils import Job, run_jobs


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_one_process_runs_the_jobs_one_after_another_in_order(tmp_path):
    trace = tmp_path / "trace.txt"
    code = (
        "import sys, time; p = sys.argv[1]; i = sys.argv[2]\n"
        "open(p, 'a').write(f'start {i}\\n'); time.sleep(0.2); open(p, 'a').write(f'end {i}\\n')"
    )
    jobs = [
        Job(f"j{i}", [*_python(code), str(trace), str(i)], tmp_path / f"{i}.log") for i in range(3)
    ]
    assert run_jobs(jobs, processes=1, poll_seconds=0.02) == []
    assert trace.read_text().split("\n")[:-1] == [
        "start 0",
        "end 0",
        "start 1",
        "end 1",
        "start 2",
        "end 2",
    ]


def test_failures_are_returned_and_each_job_writes_its_own_log(tmp_path, capsys):
    jobs = [
        Job(
            "ok",
            _python("import os; print('out', os.environ['BAMDP_X'])"),
            tmp_path / "a/ok.log",
            env={"BAMDP_X": "42"},
        ),
        Job(
            "bad",
            _python("import sys; print('oops', file=sys.stderr); raise SystemExit(3)"),
            tmp_path / "b/bad.log",
        ),
    ]
    failed = run_jobs(jobs, processes=2, poll_seconds=0.02)
    assert [job.name for job in failed] == ["bad"]
    assert (tmp_path / "a/ok.log").read_text() == "out 42\n"  # the folder was created
    assert (tmp_path / "b/bad.log").read_text() == "oops\n"  # stderr goes to the log too
    printed = capsys.readouterr().out
    assert "start  ok" in printed and "done   ok" in printed
    assert "FAILED bad (exit 3)" in printed and str(tmp_path / "b/bad.log") in printed

    seen = []
    run_jobs(jobs, 2, on_done=lambda job, code, s: seen.append((job.name, code)), poll_seconds=0.02)
    assert sorted(seen) == [("bad", 3), ("ok", 0)]


def test_an_interrupt_stops_the_running_children(tmp_path):
    pid_file = tmp_path / "pid"
    slow = _python(
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    # The quick job ends once the slow one is running; its on_done then raises, as Ctrl-C would.
    quick = _python(
        f"import os, time\nwhile not os.path.exists({str(pid_file)!r}): time.sleep(0.01)"
    )

    def interrupt(job, code, seconds):
        raise KeyboardInterrupt

    jobs = [Job("slow", slow, tmp_path / "slow.log"), Job("quick", quick, tmp_path / "quick.log")]
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, processes=2, on_done=interrupt, poll_seconds=0.02)
    pid = int(Path(pid_file).read_text())
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left running
        os.kill(pid, 0)


def test_processes_must_be_positive():
    with pytest.raises(ValueError, match="processes must be >= 1, got 0"):
        run_jobs([], 0)
