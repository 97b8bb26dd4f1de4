"""Phase timestamps of a study or job, for benchmarks (``tests/benchmarks/bench_trial_timeline.py``).

With ``NERLAB_TIMELINE`` set to a file, every process of the study (its driver, each trial's driver, the
Train workers: Ray's local processes inherit the driver's environment) appends one JSON line per phase,
``{"t": wall time, "event": ..., "pid": ...}``. Unset (the default), ``mark`` does nothing.
"""

from __future__ import annotations

import json
import os
import time

ENV = "NERLAB_TIMELINE"


def mark(event: str, **fields) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"t": time.time(), "event": event, "pid": os.getpid(), **fields}) + "\n"
    with open(path, "a", encoding="utf-8") as f:  # one short append per line: lines do not interleave
        f.write(line)
