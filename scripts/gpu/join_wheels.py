"""Gather the carried wheel sets into one store, join cut wheels, check every sha256 (standard library only).

Runs on the GPU machine (the image's python3) from ``install_wheels.sh``. Each GPU call carries one set
(``.gpu-wheels/setN``); the files are copied into ``STORE`` (under /tmp, which outlives the call while the
machine stays warm), so a later call finds the sets of earlier ones. Exit 3, naming the sets to carry,
when some are missing (the machine was given back in between: carry them again, one call each).

Usage: ``python3 scripts/gpu/join_wheels.py STORE [SETDIR...]``; prints the folder of joined wheels.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    store, set_dirs = Path(argv[0]), [Path(a) for a in argv[1:]]
    parts = store / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    for d in (d for d in set_dirs if d.is_dir()):
        for f in d.iterdir():
            if f.is_file() and not (parts / f.name).exists():
                shutil.copyfile(f, parts / f.name)
    if not (parts / "MANIFEST.json").is_file():
        print(f"join_wheels: no MANIFEST.json in {parts}: carry .gpu-wheels/set1 (make it with "
              f"scripts/gpu/pack_wheels.py)", file=sys.stderr)
        return 3
    manifest = json.loads((parts / "MANIFEST.json").read_text())
    missing = sorted({p["set"] if e["parts"] else e["set"] for e in manifest["wheels"]
                      for p in (e["parts"] or [e]) if not (parts / p["file"]).is_file()})
    if missing:
        print(f"join_wheels: sets {missing} of {len(manifest['sets'])} missing on this machine: carry "
              + ", then ".join(f".gpu-wheels/set{s}" for s in missing) + " (one call each, back to back)",
              file=sys.stderr)
        return 3
    joined = store / "wheels"
    joined.mkdir(exist_ok=True)
    for e in manifest["wheels"]:
        target = joined / e["file"]
        if not target.is_file():
            with target.open("wb") as out:
                for p in e["parts"] or [e]:
                    out.write((parts / p["file"]).read_bytes())
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        if digest != e["sha256"]:
            target.unlink()
            print(f"join_wheels: {e['file']}: sha256 mismatch (a part is damaged: carry its set again)",
                  file=sys.stderr)
            return 3
    print(joined)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
