"""Materialise what a spec names but nobody has yet: a synthetic corpus and tiny PLMs (cached). Data files
and PLM folders may be ``s3://`` URIs: each node reads its own copy (``storage.local``)."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nerlab.models.wojood import WOJOOD_TYPES, DataError, read_file, to_flat, write_file
from nerlab.platform.errors import SpecError, first_line, redact
from nerlab.platform.specs.paths import writable_folder
from nerlab.platform.specs.run import TINY_PLM, DataSpec, check_plm
from nerlab.platform.tracking.storage import is_uri, local


@dataclass(frozen=True)
class Inputs:
    """Absolute paths a training job reads."""

    train: str
    val: str
    test: str | None
    plm: str


@contextmanager
def _locked(folder: Path):
    """One process builds a cached input at a time (concurrent trials share the cache)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_data(data: DataSpec, cache: Path, task: str = "nested") -> tuple[str, str, str | None]:
    if data.synth is None:
        return data.train, data.val, data.test
    from nerlab.models.synth import write_corpus

    folder = cache / f"synth-{task}-{data.synth.sentences}-seed{data.synth.seed}"
    with _locked(cache):
        if not (folder / "test.txt").is_file():
            tmp = folder.with_suffix(".tmp")
            paths = write_corpus(tmp, data.synth.sentences, data.synth.seed)
            if task == "flat":  # Wojood's flat files keep the outermost tag of each token
                for p in paths.values():
                    write_file(p, to_flat(read_file(p)))
            tmp.rename(folder)
    return str(folder / "train.txt"), str(folder / "val.txt"), str(folder / "test.txt")


def prepare_plm(plm: str, train_file: str, cache: Path) -> str:
    m = TINY_PLM.match(plm)
    if not m:
        return plm
    from nerlab.models.tiny_plm import build_tiny_plm

    layers, hidden = int(m.group(1)), int(m.group(2))
    folder = cache / f"tiny-{layers}x{hidden}-{Path(train_file).parent.name}"
    with _locked(cache):
        if not (folder / "config.json").is_file():
            tmp = folder.with_suffix(".tmp")
            build_tiny_plm([Path(local(train_file))], tmp, layers=layers, hidden=hidden, heads=max(1, hidden // 32))
            tmp.rename(folder)
    return str(folder)


def validate_files(task: str, train: str, val: str, test: str | None) -> None:
    """Read every data file once in the driver so a bad line fails before any cluster starts (an ``s3://``
    one from this node's copy, its errors naming the URI)."""
    for path in (train, val, test):
        if path is None:
            continue
        try:
            copy = fetched(path, "data")
            read_file(copy, task=task, types=WOJOOD_TYPES)
        except DataError as e:
            raise DataError(str(e).replace(copy, path)) from None


def fetched(place: str, where: str) -> str:
    """``local(place)``, a missing or unreachable object being a one-line SpecError naming ``where``."""
    try:
        return local(place)
    except OSError as e:  # FileNotFoundError names the URI; pyarrow's errors (credentials, network) do not
        first = first_line(e)
        raise SpecError(f"{where}: {first if place in first else f'{place}: {first}'}") from None


def check_remote_plms(plms, source: str) -> None:
    """PLM folders named by ``s3://`` URIs, fetched to this node and checked as a local folder is by
    ``check_plm`` (weights, config) before anything starts."""
    for plm in plms:
        if is_uri(plm):
            check_plm(fetched(plm, f"{source}: PLM"), source, f"PLM {plm}")


def check_store(tracking_uri: str, where: str) -> None:
    """A SQLite tracking store must be a file we can create or write; a tracking server must answer and a
    database's driver be installed (``tracking.store_problem``)."""
    from nerlab.platform.tracking.runs import sqlite_file, store_problem

    db = sqlite_file(tracking_uri)
    if db is None:
        problem = store_problem(tracking_uri)
        if problem:
            raise SpecError(f"{where}: {redact(tracking_uri)}: {problem}")
        return
    if db.is_dir():
        raise SpecError(f"{where}: {db}: is a folder, not a SQLite file")
    writable_folder(db.parent, where)


def prepare(task: str, data: DataSpec, plm: str, cache: Path) -> Inputs:
    train, val, test = prepare_data(data, cache, task)
    validate_files(task, train, val, test)
    try:
        plm_path = prepare_plm(plm, train, cache)
    except OSError as e:
        raise SpecError(f"model.plm: could not build {plm}: {e}") from None
    return Inputs(train, val, test, plm_path)
