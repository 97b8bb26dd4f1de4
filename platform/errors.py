"""What a user is told when input is bad: the two error classes (exit code 2, one line), and ``redact``,
which keeps credentials out of every message, log and MLflow param."""

from __future__ import annotations

import re


class SpecError(ValueError):
    """A bad spec: the message names the file and the key (``spec.yaml: train.lr: ...``)."""


class UsageError(ValueError):
    """Bad input found before anything started (a command-line value, a missing study or store)."""


_URI_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@")
_SECRET_QUERY = re.compile(r"(?i)((?:password|passwd|token|secret|key)=)[^&\s'\"]+")


def first_line(e: BaseException) -> str:
    """An error's message as one line (its first), or its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def redact(text: str) -> str:
    """``text`` (a URI, or a message that echoes one) with the ``user:password@`` of every URI and the
    values of ``token=``, ``password=``, ``secret=``, ``key=`` masked: credentials never reach the
    terminal, a log, or MLflow params."""
    return _SECRET_QUERY.sub(r"\1***", _URI_CREDENTIALS.sub(r"\1***@", text))
