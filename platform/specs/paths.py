"""Where a command writes, checked before anything runs: a folder it will create or fill, a file it will
write. Every verb that writes goes through here (``--out`` and ``--output`` through the argparse types in
``commands``, a spec's ``output`` through ``jobs``/``study``), so a bad place is one line and exit 2.

The checks write a probe rather than read permission bits: root passes every permission check, yet cannot
write in an immutable (``chattr +i``) folder or on a read-only mount.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from nerlab.platform.errors import SpecError


def writable_folder(path: str | Path, where: str = "") -> Path:
    """A folder to create (with its parents) or fill: not a file, and its nearest existing ancestor a folder
    this process can write in."""
    path = Path(path)
    at = f"{where}: {path}" if where else str(path)  # the message's start: the key or option, then the place
    base = path
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise SpecError(f"{at}: cannot be created: {base} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise SpecError(f"{at}: cannot write in {base} ({e.strerror or e})") from None
    return path


def writable_file(path: str | Path, where: str = "") -> Path:
    """A file to write (its folder created if need be): not a folder, and writable if it exists."""
    path = Path(path)
    at = f"{where}: {path}" if where else str(path)
    if path.is_dir():
        raise SpecError(f"{at}: is a folder; give a file name")
    writable_folder(path.parent, at)
    if path.exists():
        try:
            with open(path, "ab"):  # appends nothing: only asks whether the file may be written
                pass
        except OSError as e:
            raise SpecError(f"{at}: cannot be written ({e.strerror or e})") from None
    return path
