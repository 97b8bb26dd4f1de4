"""The study's live view, fed Tune-like trials (no Ray): its trial lines, counts, status line and the quiet
redirection of a process's output into the study's log file."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

from nerlab.platform.studies import live_view as progress
from nerlab.platform.studies.live_view import Console, View, _redirected
from nerlab.platform.specs.study import StudySpec


def trial(i: int, status: str, loss: str = "ce", lam: float = 0.0, **last):
    return SimpleNamespace(trial_id=f"t{i}", status=status, last_result=last or None,
                           config={"plm": "tiny:2x64", "loss": loss, "variance_penalty": lam, "seed": 3407})


def view(tmp_path, every_s: float = 30.0) -> tuple[View, io.StringIO]:
    stream = io.StringIO()  # not a terminal
    spec = StudySpec(name="demo", output=str(tmp_path))  # a grid of 4 trials
    return View(stream, spec, Console(every_s=every_s), tmp_path / "logs/study.log"), stream


def test_one_line_per_ended_trial_then_a_status_line(tmp_path):
    v, out = view(tmp_path)
    v.header()
    # As Tune calls them: a completed trial is still RUNNING, a failed one is ERROR already.
    a = trial(0, "RUNNING", epoch=4, val_micro_f1=0.61234, final=True, time_total_s=42.4)
    b = trial(1, "RUNNING", "unified", 5.0, epoch=2, val_micro_f1=0.3, final=False, time_total_s=20)
    c = trial(2, "RUNNING", "ce", 5.0)
    d = trial(3, "RUNNING", "unified", 0.0, epoch=1, val_micro_f1=0.2, final=False)
    trials = [a, b, c, d]
    v.result(a, a.last_result)
    v.ended(a, trials, error=False)
    a.status = "TERMINATED"
    v.ended(a, trials, error=False)  # a second event for the same trial prints nothing
    v.ended(b, trials, error=False)
    b.status = "TERMINATED"
    c.status = "ERROR"
    v.ended(c, trials, error=True)
    v.status(trials, force=True)  # the end of the experiment: nothing new, no second status line
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("study demo: grid of 4 trials")
    assert str(tmp_path / "logs/study.log") in lines[1]
    ends = [ln for ln in lines if ln.startswith("[")]
    assert ends == [
        "[1/4] done    tiny:2x64·ce·λ0·s3407  val F1 0.6123  4 epochs  42s",
        "[2/4] stopped tiny:2x64·unified·λ5·s3407  val F1 0.3000  2 epochs  20s",
        f"[3/4] failed  tiny:2x64·ce·λ5·s3407  see {tmp_path / 'logs/study.log'}",
    ]
    status = [ln for ln in lines if ln.startswith("  ")]
    assert len(status) == 3  # not a terminal: a status line after each ended trial
    assert status[-1].startswith("  1 done, 1 running, 0 pending, 1 failed, 1 stopped early | best 0.6123 "
                                 "tiny:2x64·ce·λ0·s3407 |")
    assert "elapsed, ~" in status[-1] and "? left" not in status[-1]


def test_status_lines_are_rate_limited_off_a_terminal(tmp_path):
    v, out = view(tmp_path, every_s=3600)
    trials = [trial(0, "RUNNING"), trial(1, "PENDING")]
    for _ in range(5):
        v.status(trials)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "0 done, 1 running, 3 pending" in lines[0] and "~? left" in lines[0]


def test_on_a_terminal_the_status_line_is_rewritten_in_place(tmp_path, monkeypatch):
    now = [1000.0]  # the view's clock, moved by the test alone
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    v, out = view(tmp_path)
    v.tty = True
    trials = [trial(0, "RUNNING")]
    v.status(trials)
    now[0] += 0.4
    v.status(trials)  # within half a second of the last: left out
    v.ended(trial(0, "TERMINATED", epoch=1, val_micro_f1=0.5, final=True), trials, error=False)
    v.close()
    text = out.getvalue()
    assert text.count("\n") == 2  # the trial's line and the last status line; updates rewrite one line
    assert text.count("\r\033[K") == 3  # written, cleared for the trial's line, written again


def test_quiet_output_goes_to_the_log_file(tmp_path):
    log = tmp_path / "logs" / "study.log"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from nerlab.platform.studies.live_view import _redirected\n"
        f"with _redirected(Path({str(log)!r}), 1) as term:\n"
        "    print('from python'); print('to stderr', file=sys.stderr)\n"
        "    os.write(1, b'from fd 1\\n'); os.write(2, b'from fd 2\\n')\n"
        "    os.system('echo from a child')\n"
        "    term.write('to the terminal\\n')\n"
        "print('after')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONUNBUFFERED": "0"})
    assert p.returncode == 0, p.stderr
    assert p.stdout == "to the terminal\nafter\n" and p.stderr == ""
    assert set(log.read_text().splitlines()) == {"from python", "to stderr", "from fd 1", "from fd 2",
                                                 "from a child"}


def test_the_first_status_lines_show_on_a_machine_booted_seconds_ago(tmp_path, monkeypatch):
    """time.monotonic() counts from boot: 5 s after it, the first status line still shows (terminal or not)
    and the next one waits its interval from there, not from the clock's zero."""
    clock = [5.0]
    monkeypatch.setattr("nerlab.platform.studies.live_view.time.monotonic", lambda: clock[0])
    v, out = view(tmp_path, every_s=30)
    trials = [trial(0, "RUNNING"), trial(1, "PENDING")]
    v.status(trials)
    clock[0] = 34.0  # 29 s after the first line: too soon
    v.status(trials)
    clock[0] = 35.0
    v.status(trials)
    assert len(out.getvalue().splitlines()) == 2

    t, term = view(tmp_path)
    t.tty = True
    clock[0] = 5.2
    t.status(trials)
    assert term.getvalue().count("\r\033[K") == 1
