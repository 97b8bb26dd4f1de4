"""What a study shows on the terminal: a header, one line per trial that ends, and a status line; and what a
training job (``nerlab train``) shows: a header and one line per epoch (the command prints the result).

Quiet by default: while the study runs, everything else the process and its Ray children print (Tune's
trial tables, the workers' logs relayed by Ray, progress bars, warnings) goes to ``OUTPUT/logs/study.log``
(a training job's to ``OUTPUT/logs/train.log``).
Both levels are redirected: Python's ``sys.stdout``/``sys.stderr`` and file descriptors 1 and 2, so that
C++ logs of Ray and the processes Ray starts land in the file too. ``verbose`` leaves the output alone and
adds only the trial lines.

Tune pickles its callbacks with the experiment and a restored study brings back the pickled ones, so the
callback here holds nothing: it hands Tune's events to the view of the running command (``_VIEW``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ray import tune
from ray.train import UserCallback

from nerlab.models import names as N
from nerlab.platform.specs.run import RunSpec
from nerlab.platform.specs.search import grid_size, trial_key, trial_run_name, trial_run_spec
from nerlab.platform.specs.study import StudySpec

LOG_FILE = "logs/study.log"  # under the study's output folder
TRAIN_LOG_FILE = "logs/train.log"  # under a training job's output folder


@dataclass(frozen=True)
class Console:
    """How ``nerlab study run|resume`` talks to the terminal."""

    verbose: bool = False  # Ray's tables and the workers' logs on the terminal, as Ray prints them
    to_stderr: bool = False  # the view on stderr (``--json``: stdout holds only the summary)
    every_s: float = 30.0  # a status line at most this often when the stream is not a terminal


_VIEW: "View | None" = None


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class View:
    """The live view of one study: counts from Tune's trials, lines to ``stream``."""

    def __init__(self, stream: TextIO, spec: StudySpec, console: Console, log: Path | None):
        self.stream, self.spec, self.console, self.log = stream, spec, console, log
        self.tty = (not console.verbose) and stream.isatty()
        self.total = grid_size(spec)
        self.kept: set[str] = set()  # keys of the trials finished before this command: counted as done
        self.start = time.monotonic()
        self.last_status: float | None = None  # when the last status line was printed; None: none yet
        self.shown: set[str] = set()  # trials whose end was printed
        self.ended_here = 0  # trials that ended in this command (for the estimate)
        self.best: tuple[float, str] | None = None
        self.status_shown = False  # a status line stands on the terminal's last line
        self.last_line = ""  # the last line written (a forced status line that says nothing new is left out)

    # ---- lines --------------------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        if self.status_shown:  # the status line gives way to the new line and comes back below it
            self.stream.write("\r\033[K")
            self.status_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()
        self.last_line = text

    def header(self) -> None:
        s, r = self.spec, self.spec.resources
        what = f"grid of {self.total} trials" if s.search.mode == "grid" else f"optuna, {self.total} trials"
        self._write(f"study {s.name}: {what}, at most {r.max_concurrent} at a time; output {s.output}")
        if self.log is not None:
            self._write(f"Ray's and the workers' output: {self.log} (--verbose shows it here)")

    def plan(self, kept: set[str], grows: str | None) -> None:
        """What this command runs, once the study's store is read: the trials (keys) ``kept`` had finished
        before it (a restored Tune run lists them too: they count once); ``grows``: what a grown spec adds."""
        self.kept = set(kept)
        if grows:
            self._write(f"  {grows}; {len(kept)} done are kept")
        elif kept:
            self._write(f"  {len(kept)} of {self.total} trials had finished: kept")

    def _key(self, trial) -> str:
        return trial_key(self.spec, dict(trial.config), trial.trial_id)

    def name(self, trial) -> str:
        try:
            return trial_run_name(trial.config, trial_run_spec(self.spec, dict(trial.config), self._key(trial))[1])
        except Exception:  # noqa: BLE001 - a name is never worth failing the study
            return trial.trial_id

    def result(self, trial, result: dict) -> None:
        f1 = result.get(N.TUNE_VAL_F1)
        if f1 is not None and (self.best is None or f1 > self.best[0]):
            self.best = (float(f1), self.name(trial))

    def ended(self, trial, trials, error: bool) -> None:
        if trial.trial_id in self.shown:
            return
        self.shown.add(trial.trial_id)
        self.ended_here += 1
        last = trial.last_result or {}
        done = len(self.kept | {self._key(trial)} | {self._key(t) for t in trials if t.status in ("TERMINATED", "ERROR")})
        if error:
            how = "failed "
            tail = f"see {self.log}" if self.log else "see Tune's error above"
        else:
            how = "done   " if last.get(N.TUNE_FINAL) else "stopped"
            f1 = last.get(N.TUNE_VAL_F1)
            tail = (f"val F1 {f1:.4f}" if f1 is not None else "val F1 -") + f"  {last.get(N.TUNE_EPOCH, 0)} epochs"
        secs = last.get("time_total_s")
        self._write(f"[{done}/{self.total}] {how} {self.name(trial)}  {tail}"
                    + (f"  {_duration(secs)}" if secs is not None else ""))
        self.status(trials, force=True)

    def counts(self, trials) -> dict[str, int]:
        c = {"done": len(self.kept), "running": 0, "failed": 0, "stopped early": 0}
        for t in trials:
            if self._key(t) in self.kept:
                continue
            status = t.status
            if t.trial_id in self.shown and status not in ("TERMINATED", "ERROR"):
                status = "TERMINATED"  # Tune calls on_trial_complete before it marks the trial
            if status == "ERROR":
                c["failed"] += 1
            elif status == "TERMINATED":
                c["done" if (t.last_result or {}).get(N.TUNE_FINAL) else "stopped early"] += 1
            elif status in ("RUNNING", "PAUSED"):
                c["running"] += 1
        c["pending"] = max(0, self.total - sum(c.values()))
        return c

    def status_line(self, trials) -> str:
        c = self.counts(trials)
        for t in trials:  # a restored study: trials that ended before this command count for the best
            if t.trial_id not in self.shown and t.last_result and t.status == "TERMINATED":
                self.result(t, t.last_result)
        elapsed = time.monotonic() - self.start
        left = c["pending"] + c["running"]
        eta = "?" if not self.ended_here else _duration(elapsed / self.ended_here * left)
        best = f"best {self.best[0]:.4f} {self.best[1]}" if self.best else "best -"
        return (f"{c['done']} done, {c['running']} running, {c['pending']} pending, {c['failed']} failed, "
                f"{c['stopped early']} stopped early | {best} | {_duration(elapsed)} elapsed, ~{eta} left")

    def status(self, trials, force: bool = False) -> None:
        if self.console.verbose:
            return
        now = time.monotonic()
        if self.tty:
            if not force and not self._due(now, 0.5):  # Tune's loop steps many times a second
                return
            self.last_status = now
            self.stream.write("\r\033[K" + self.status_line(trials)[:self._width() - 1])  # one row: \r reaches it
            self.stream.flush()
            self.status_shown = True
            return
        line = "  " + self.status_line(trials)
        news = line.rsplit(" | ", 1)[0] != self.last_line.rsplit(" | ", 1)[0]  # counts or best changed
        if (force and news) or self._due(now, self.console.every_s):
            self.last_status = now
            self._write(line)

    def _due(self, now: float, every_s: float) -> bool:
        """Whether a status line may be printed at ``now``: the first always, then one per ``every_s``. The
        monotonic clock counts from boot, so "long ago" is None, never 0.0 (a machine up for less than
        ``every_s`` would suppress the first lines)."""
        return self.last_status is None or now - self.last_status >= every_s

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 120

    def close(self) -> None:
        if self.status_shown:
            self.stream.write("\n")
            self.stream.flush()
            self.status_shown = False


class TrialProgress(tune.Callback):
    """Tune's events to the running command's view (none: nothing)."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if _VIEW is not None:
            _VIEW.result(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _VIEW is not None:
            _VIEW.ended(trial, trials, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        if _VIEW is not None:
            _VIEW.ended(trial, trials, error=True)

    def on_step_end(self, iteration, trials, **info):
        if _VIEW is not None and trials:
            _VIEW.status(trials)

    def on_experiment_end(self, trials, **info):
        if _VIEW is not None:
            _VIEW.status(trials, force=True)
            _VIEW.close()


@contextmanager
def _redirected(log: Path, keep_fd: int):
    """Send fds 1 and 2 and ``sys.stdout``/``sys.stderr`` to ``log``; yield a stream on the old ``keep_fd``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    for s in (sys.stdout, sys.stderr):
        s.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    term = os.fdopen(os.dup(saved[keep_fd]), "w", buffering=1, encoding="utf-8", errors="replace")
    sink = open(log, "a", buffering=1, encoding="utf-8", errors="replace")
    old_out, old_err = sys.stdout, sys.stderr
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    sys.stdout = sys.stderr = sink
    try:
        yield term
    finally:
        for s in (sys.stdout, sys.stderr):
            s.flush()
        sys.stdout, sys.stderr = old_out, old_err
        for fd, s in saved.items():
            os.dup2(s, fd)
            os.close(s)
        sink.close()
        term.close()


@contextmanager
def _console_stream(console: Console, log: Path):
    """The stream a view writes to. Quiet: the terminal, while everything else the process and its children
    print goes to ``log``; verbose: the process's own stdout (stderr), its output left alone."""
    if console.verbose:
        yield sys.stderr if console.to_stderr else sys.stdout
    else:
        with _redirected(log, 2 if console.to_stderr else 1) as term:
            yield term


@contextmanager
def showing(console: Console, spec: StudySpec):
    """The live view of ``spec``'s study while the block runs; quiet unless ``console.verbose``."""
    global _VIEW
    log = Path(spec.output) / LOG_FILE
    with _console_stream(console, log) as stream:
        view = View(stream, spec, console, None if console.verbose else log)
        view.header()
        _VIEW = view
        try:
            yield view
        finally:
            _VIEW = None
            view.close()


class EpochReports(UserCallback):
    """Rank 0's report of each epoch, from Ray Train's controller (where Train calls its callbacks, a process
    of its own) to the driver's console, through a Ray queue."""

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        if not metrics[0].get(N.TUNE_FINAL):  # the final report is the command's result line
            self.queue.put(metrics[0])


class JobView:
    """What ``nerlab train`` shows while it trains: a header, then one line per epoch as rank 0 reports it."""

    def __init__(self, stream: TextIO, spec: RunSpec, log: Path | None):
        self.stream, self.spec, self.log = stream, spec, log

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def header(self) -> None:
        s, r = self.spec, self.spec.resources
        self._write(f"train {s.name}: {s.task}, {s.model.plm}, {r.workers} worker(s), {s.train.epochs} epochs; "
                    f"output {s.output}")
        if self.log is not None:
            self._write(f"Ray's and the workers' output: {self.log} (--verbose shows it here)")

    def epoch(self, m: dict) -> None:
        secs = m[N.TUNE_EPOCH_SECONDS]
        self._write(f"epoch {m[N.TUNE_EPOCH]}/{self.spec.train.epochs}  train loss {m[N.TUNE_TRAIN_LOSS]:.4f}  "
                    f"val F1 {m[N.TUNE_VAL_F1]:.4f}  " + (f"{secs:.1f}s" if secs < 60 else _duration(secs)))

    @contextmanager
    def following(self):
        """The Ray Train callbacks that bring each epoch's report here, printed as they come (Ray must be up)."""
        from ray.util.queue import Queue

        queue = Queue(actor_options={"num_cpus": 0})

        def follow() -> None:
            for m in iter(queue.get, None):  # None: the job has ended
                self.epoch(m)

        thread = threading.Thread(target=follow, name="nerlab-epochs", daemon=True)
        thread.start()
        try:
            yield [EpochReports(queue)]
        finally:
            try:
                queue.put(None)  # after every report the job made (a callback's put returns once it is queued)
                thread.join(timeout=60)
            finally:
                queue.shutdown()


@contextmanager
def showing_job(console: Console, spec: RunSpec):
    """The view of a training job while the block runs; quiet unless ``console.verbose``."""
    log = Path(spec.output) / TRAIN_LOG_FILE
    with _console_stream(console, log) as stream:
        view = JobView(stream, spec, None if console.verbose else log)
        view.header()
        yield view
