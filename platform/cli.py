"""The ``nerlab`` command line: parse, validate, call one function.

Exit codes: 0 success, 2 bad input (one line naming the file, line or key), 1 failure while running.
"""

from __future__ import annotations

import argparse
import sys

from nerlab.models.wojood import DataError
from nerlab.platform.commands import register
from nerlab.platform.errors import SpecError, UsageError, first_line, redact

BAD_INPUT = (UsageError, DataError, SpecError, FileNotFoundError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2 through ``main``), like every other bad input."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nerlab", description="Arabic flat and nested NER experiments at scale.")
    register(p.add_subparsers(dest="verb", required=True, metavar="VERB"))
    return p


def _terminated(signum, frame):
    """SIGTERM ends a command like Ctrl-C does: cleanups run, servers and Ray stop with it."""
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import os
    import signal
    import threading

    # MLflow's usage telemetry: no data leaves the user's machines unasked, and its client sets and unsets an
    # environment variable from its own thread, which breaks a thread that copies os.environ meanwhile
    # (a trial failed with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'). Set before MLflow is first imported;
    # Ray's local workers inherit it, cluster workers get it from connect_ray.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        args = build_parser().parse_args(argv)
        return args.fn(args)
    except BAD_INPUT as e:
        # One line, and never a credential a spec value carried (a tracking URI's user:password@).
        print(f"nerlab: error: {redact(first_line(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
