"""The GPU proof's scripts (scripts/gpu), on the CPU: the wheel transfer (closure, cutting into sets,
joining; no network) and the arithmetic of the checks (study_check.py, train_check.py).

Small made-up wheels stand in for ray and friends: the set is closed over the requirements that apply on
Python 3.12 / Linux (extras and markers included), a wheel bigger than a set is cut in byte parts that
join back to the same sha256, and a missing set is named.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import sys
import zipfile
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parents[2] / "scripts" / "gpu"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pack, join = load("pack_wheels"), load("join_wheels")
study_check, train_check = load("study_check"), load("train_check")


def wheel(folder: Path, name: str, version: str, requires: list[str], payload: int = 1000) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
        z.writestr(f"{name}/data.bin", os.urandom(payload))  # incompressible: the file is as big as asked
    return path


@pytest.fixture
def cache(tmp_path) -> Path:
    c = tmp_path / "cache"
    c.mkdir()
    wheel(c, "alpha", "1.0", ["beta>=2", "numpy>=1.20", "gamma; extra == 'x'", "delta; python_version < '3.10'"],
          payload=5000)
    wheel(c, "beta", "2.1", ["numpy"])
    wheel(c, "gamma", "0.3", [])
    wheel(c, "delta", "9.0", [])  # only for old Pythons: not carried
    wheel(c, "numpy", "2.0", [])  # on the image: not carried
    return c


def test_closure_follows_extras_and_markers_and_leaves_image_packages(cache) -> None:
    carry, from_image = pack.closure(cache, {"numpy": None}, ("alpha[x]==1.0",))
    assert sorted(p.name.split("-")[0] for p in carry) == ["alpha", "beta", "gamma"]
    assert sorted(from_image) == ["numpy"] and len(from_image["numpy"]) == 2


def test_closure_refuses_an_incomplete_set(cache) -> None:
    wheel(cache, "alpha", "1.0", ["epsilon"])  # overwrites alpha: needs a wheel nobody downloaded
    with pytest.raises(SystemExit, match="incomplete: epsilon"):
        pack.closure(cache, {}, ("alpha==1.0",))


def test_closure_refuses_a_wrong_version(cache) -> None:
    with pytest.raises(SystemExit, match="does not satisfy beta>=3"):
        pack.closure(cache, {}, ("beta>=3",))


def test_sets_cut_a_big_wheel_and_join_back(cache, tmp_path) -> None:
    carry, _ = pack.closure(cache, {"numpy": None}, ("alpha[x]==1.0",))
    out = tmp_path / "sets"
    cap = 4000  # alpha (about 5 kB) must straddle a boundary
    manifest = pack.cut_sets(carry, out, cap)
    assert len(manifest["sets"]) >= 2 and all(s["bytes"] <= cap for s in manifest["sets"])
    alpha = next(e for e in manifest["wheels"] if e["name"] == "alpha")
    assert len(alpha["parts"]) >= 2 and len({p["set"] for p in alpha["parts"]}) == len(alpha["parts"])
    import json

    for s in manifest["sets"]:
        (out / s["dir"] / "MANIFEST.json").write_text(json.dumps(manifest))
    store = tmp_path / "store"
    sets = sorted(out.glob("set*"))
    assert join.main([str(store), str(sets[0])]) == 3  # the other set has not come yet
    assert join.main([str(store), *map(str, sets[1:])]) == 0  # a later call brings it
    for w in carry:
        joined = store / "wheels" / w.name
        assert hashlib.sha256(joined.read_bytes()).digest() == hashlib.sha256(w.read_bytes()).digest()


def test_join_refuses_a_damaged_part(cache, tmp_path) -> None:
    import json

    carry, _ = pack.closure(cache, {"numpy": None}, ("alpha[x]==1.0",))
    out = tmp_path / "sets"
    manifest = pack.cut_sets(carry, out, 4000)
    for s in manifest["sets"]:
        (out / s["dir"] / "MANIFEST.json").write_text(json.dumps(manifest))
    part = next(out.glob("set*/alpha-*.part-000"))
    part.write_bytes(b"x" + part.read_bytes()[1:])
    assert join.main([str(tmp_path / "store"), *map(str, sorted(out.glob("set*")))]) == 3


# ---- the checks' arithmetic ----------------------------------------------------------------------------
def test_max_overlap_matches_counting_at_every_instant() -> None:
    rng = random.Random(0)
    for _ in range(200):
        intervals = [(s, s + rng.randint(1, 30)) for s in (rng.randint(0, 100) for _ in range(rng.randint(1, 8)))]
        # brute force on half-open [start, end): an end at t closes before a start at t opens
        brute = max(sum(s <= t < e for s, e in intervals) for t in range(0, 140))
        assert study_check.max_overlap(intervals) == brute


def test_four_trials_at_once_and_in_turn() -> None:
    assert study_check.max_overlap([(0, 50), (1, 49), (2, 55), (3, 51)]) == 4
    assert study_check.max_overlap([(0, 10), (10, 20), (20, 30), (30, 40)]) == 1


def test_last_json_skips_log_lines_before_and_after() -> None:
    text = 'INFO start {not json}\n{\n  "run_id": "abc",\n  "val_f1": 0.5\n}\n(raylet) shutting down\n'
    assert train_check.last_json(text) == {"run_id": "abc", "val_f1": 0.5}
