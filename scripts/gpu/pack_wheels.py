"""Pack the wheels the GPU machine lacks (ray, mlflow, optuna, seqeval and their needs) into transfer sets.

The GPU machine (Python 3.12, torch with CUDA, transformers; no ray, mlflow, optuna or seqeval) has no
network: packages travel as wheels inside the working tree, at most 64 MiB per call, tree included. This
script, run on a networked machine:

1. downloads the whole dependency closure of ``ROOTS`` for CPython 3.12 / manylinux x86_64 into
   ``OUT/cache`` (``pip download``, binary wheels only) and builds a wheel of each sdist-only package;
2. keeps the wheels whose project is not on the image (``image_packages.txt``), and checks that the kept
   set is closed: every requirement of a kept wheel (markers for 3.12/Linux, the roots' extras) is a kept
   wheel or an image package; the image packages' version ranges go to the manifest for ``preflight.py``;
3. cuts the kept wheels, small ones first, into transfer sets ``OUT/set1``, ``OUT/set2``, ... of at most
   (limit - working tree - margin) bytes each; a wheel that straddles two sets (ray's 76 MiB one) is cut
   into byte parts (``NAME.whl.part-000``, ...) that ``install_wheels.sh`` joins with ``cat`` and checks by
   sha256. Every set holds ``MANIFEST.json`` (all wheels, parts, sets, hashes).

``--check`` then resolves the roots offline (``pip install --dry-run --no-index``) from the kept wheels
plus the cache's stand-ins for the image's packages. Nothing here is committed: ``OUT`` is git-ignored.

Usage: ``python scripts/gpu/pack_wheels.py [--out .gpu-wheels] [--check]``; each GPU call then names one
set in ``carry`` (``.gpu-wheels/set1``, then ``.gpu-wheels/set2`` in the next, back-to-back call).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ROOTS = ("ray[default,tune,train]==2.60.0", "mlflow==3.17.2", "optuna==5.0.0")
SDIST_ONLY = ("seqeval==1.2.2",)  # no wheel on PyPI: built here (pure Python); its needs are on the image
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--only-binary=:all:",
          *[a for p in PLATFORMS for a in ("--platform", p)]]
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
MiB = 2**20


def image_packages(path: Path = HERE / "image_packages.txt") -> dict[str, str | None]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version or None
    return out


def pip(*args: str, isolated: bool = False) -> None:
    """``isolated``: no pip config or PIP_* variables (no find-links or constraints from this machine)."""
    subprocess.run([sys.executable, "-m", "pip", *(["--isolated"] if isolated else []), *args], check=True)


def download(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    # numpy and scikit-learn: seqeval's needs, named so the closure's versions agree with them.
    pip("download", "-q", "-d", str(cache), *TARGET, *ROOTS, "numpy", "scikit-learn")
    pip("wheel", "-q", "--no-deps", "-w", str(cache), *SDIST_ONLY)


def metadata(wheel: Path) -> tuple[str, str, list[str]]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    return canonicalize_name(msg["Name"]), msg["Version"], msg.get_all("Requires-Dist") or []


def applies(req: Requirement, extra: str) -> bool:
    """Whether ``req`` is needed on the GPU machine by the base package ("") or by ``extra`` alone."""
    def on(e: str) -> bool:
        return req.marker is None or req.marker.evaluate({**MARKERS, "extra": e})
    return on("") if not extra else on(extra) and not on("")


def closure(cache: Path, image: dict, roots: tuple[str, ...] = (*ROOTS, *SDIST_ONLY)
            ) -> tuple[list[Path], dict[str, list[str]]]:
    """The wheels to carry (reachable from the roots, not on the image) and the image packages' ranges."""
    wheels = {}
    for w in sorted(cache.glob("*.whl")):
        name, version, reqs = metadata(w)
        wheels[name] = (w, version, reqs)
    carry, needs_from_image, seen = {}, {}, set()
    todo = [(Requirement(r), "root") for r in roots]
    while todo:
        req, by = todo.pop()
        name = canonicalize_name(req.name)
        if name in image:
            needs_from_image.setdefault(name, []).append(f"{req} (from {by})")
            continue
        if name not in wheels:
            raise SystemExit(f"pack_wheels: incomplete: {req} (needed by {by}) is neither downloaded nor on the image")
        w, version, reqs = wheels[name]
        if not req.specifier.contains(version, prereleases=True):
            raise SystemExit(f"pack_wheels: {w.name} does not satisfy {req} (needed by {by})")
        carry[name] = w
        for extra in sorted(req.extras | {""}):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            for r in map(Requirement, reqs):
                if applies(r, extra):
                    todo.append((r, f"{name}{f'[{extra}]' if extra else ''}"))
    return sorted(carry.values(), key=lambda p: (p.stat().st_size, p.name)), needs_from_image


def tree_bytes() -> int:
    """What travels besides the wheels: the tracked files (untracked, not ignored ones too)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def cut_sets(wheels: list[Path], out: Path, cap: int) -> dict:
    """Fill sets in order (small wheels first); the wheel that straddles a set boundary is cut in parts."""
    for old in out.glob("set*"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    sets, entries, current, room = [], [], None, 0
    for w in wheels:
        size, offset, parts = w.stat().st_size, 0, []
        data = w.read_bytes() if size > cap else None
        while offset < size:
            if room == 0:
                current = out / f"set{len(sets) + 1}"
                current.mkdir(parents=True)
                sets.append({"set": len(sets) + 1, "dir": current.name, "bytes": 0, "files": []})
                room = cap
            take = min(room, size - offset)
            whole = offset == 0 and take == size
            name = w.name if whole else f"{w.name}.part-{len(parts):03d}"
            if whole:
                (current / name).write_bytes(w.read_bytes())
            else:
                (current / name).write_bytes(data[offset:offset + take])
                parts.append({"set": sets[-1]["set"], "file": name, "bytes": take})
            sets[-1]["bytes"] += take
            sets[-1]["files"].append(name)
            offset, room = offset + take, room - take
        name, version, _ = metadata(w)
        entries.append({"file": w.name, "name": name, "version": version, "bytes": size, "sha256": sha256(w),
                        "set": None if parts else sets[-1]["set"], "parts": parts})
    return {"sets": sets, "wheels": entries}


def check_offline(out: Path, cache: Path, manifest: dict, image: dict) -> None:
    """Resolve the roots with pip, offline, from the joined carried wheels plus image stand-ins from the cache."""
    with tempfile.TemporaryDirectory() as tmp:
        links = Path(tmp) / "links"
        links.mkdir()
        for e in manifest["wheels"]:
            chunks = [out / f"set{p['set']}" / p["file"] for p in e["parts"]] or [out / f"set{e['set']}" / e["file"]]
            (links / e["file"]).write_bytes(b"".join(c.read_bytes() for c in chunks))
            assert sha256(links / e["file"]) == e["sha256"], e["file"]
        for w in cache.glob("*.whl"):
            if canonicalize_name(parse_wheel_filename(w.name)[0]) in image:
                (links / w.name).symlink_to(w)
        pip("install", "-q", "--dry-run", "--ignore-installed", "--no-index", "--find-links", str(links),
            "--target", str(Path(tmp) / "site"), *TARGET, *ROOTS, *SDIST_ONLY, isolated=True)
    print("offline check: pip resolved every root from the carried wheels and the image's packages")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / ".gpu-wheels")
    p.add_argument("--limit-mib", type=float, default=64.0, help="what one call may carry, working tree included")
    p.add_argument("--margin-mib", type=float, default=1.5, help="room left for the tree to grow")
    p.add_argument("--no-download", action="store_true", help="reuse OUT/cache as it is")
    p.add_argument("--check", action="store_true", help="then resolve the roots offline from the sets")
    args = p.parse_args(argv)
    out, image = args.out.resolve(), image_packages()
    cache = out / "cache"
    if not args.no_download:
        download(cache)
    wheels, from_image = closure(cache, image)
    tree = tree_bytes()
    cap = int((args.limit_mib - args.margin_mib) * MiB) - tree
    manifest = {"python": "3.12", "roots": [*ROOTS, *SDIST_ONLY], "limit_mib": args.limit_mib,
                "tree_bytes": tree, "set_cap_bytes": cap, **cut_sets(wheels, out, cap),
                "image_requirements": {k: sorted(set(v)) for k, v in sorted(from_image.items())}}
    manifest["total_bytes"] = sum(e["bytes"] for e in manifest["wheels"])
    for s in manifest["sets"]:
        (out / s["dir"] / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(wheels)} wheels to carry, {manifest['total_bytes'] / MiB:.1f} MiB; working tree {tree / MiB:.1f} MiB; "
          f"{len(manifest['sets'])} transfer set(s) of at most {cap / MiB:.1f} MiB:")
    for s in manifest["sets"]:
        print(f"  carry {out.name}/{s['dir']}: {len(s['files'])} files, {s['bytes'] / MiB:.1f} MiB "
              f"(+ tree = {(s['bytes'] + tree) / MiB:.1f} of {args.limit_mib:g} MiB)")
    split = [e["file"] for e in manifest["wheels"] if e["parts"]]
    print(f"  cut in parts: {', '.join(split) or 'none'}")
    print(f"  image packages they need: {', '.join(manifest['image_requirements'])}")
    if args.check:
        check_offline(out, cache, manifest, image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
