"""Where a study keeps what every node reads or writes: Tune's experiment state and inline trials'
checkpoints (``tune/``), Ray Train jobs' checkpoints (``ray-train/``) and the inputs the study builds
(``prepared/``: a synthetic corpus, tiny PLMs).

By default the study's output folder, as before. The spec key ``storage`` names another place: a folder
every node mounts, or an object store URI (``s3://BUCKET/PREFIX``), which Ray writes through pyarrow's
file systems, so nodes that share no disk still resume each other's trials. pyarrow's ``from_uri`` reads
the endpoint and credentials from the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), on the driver and on every node alike, and retries
for about two minutes while the store is away (patient_s3.py).

A study's checkpoints live under ``STORAGE/NAME-DIGEST`` (the spec's digest): a study replaced with
``--replace`` (another spec) starts afresh instead of restoring the old one's Tune state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from nerlab.platform.specs.paths import writable_folder
from nerlab.platform.errors import SpecError, first_line


def is_uri(place: str) -> bool:
    return "://" in place


def join(root: str, *parts: str) -> str:
    """``root``/parts for a folder or a URI (no Path: it would fold ``s3://`` into ``s3:/``)."""
    return "/".join([root.rstrip("/"), *parts])


def ray_storage(place: str):
    """Ray's ``storage_path`` and ``storage_filesystem`` (None for a folder) for a folder or URI, as Tune's and
    Train's ``RunConfig`` and ``Tuner.restore``/``can_restore`` take them."""
    if not is_uri(place):
        return place, None
    from nerlab.platform.tracking import patient_s3

    fs, path = patient_s3.from_uri(place)
    return path, fs


def study_root(storage: str | None, output: str, name: str, digest: str) -> str:
    """The folder or URI under which a study's ``tune/``, ``ray-train/`` and ``prepared/`` go."""
    if storage is None:
        return str(Path(output))
    if is_uri(storage):
        return join(storage, f"{name}-{digest}")
    return str(Path(storage).expanduser().resolve() / f"{name}-{digest}")


def check(storage: str | None, where: str) -> None:
    """Bad storage is a SpecError naming the place, before anything starts: a folder that cannot be written,
    an object store whose bucket does not exist or that refuses the credentials (a probe object is written
    and deleted under the prefix)."""
    if storage is None:
        return
    if not is_uri(storage):
        writable_folder(Path(storage).expanduser(), where)
        return
    import pyarrow.fs as pafs

    if not storage.startswith("s3://"):
        raise SpecError(f"{where}: {storage}: only s3:// URIs or folders are supported")
    try:
        fs, path = pafs.FileSystem.from_uri(storage)
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise SpecError(f"{where}: {storage}: the bucket {bucket!r} does not exist")
        probe = f"{path.rstrip('/')}/.nerlab-write-probe"
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except (OSError, ValueError) as e:  # pyarrow's errors: refused credentials, no endpoint, a bad URI
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"{where}: {storage}: {first_line(e)}") from None


# ---- inputs in object storage: data files and PLM folders named by s3:// URIs -----------------------------
COMPLETE = ".nerlab-complete"  # the last object of a published folder: S3 has no atomic rename


def cache_root() -> Path:
    """This node's copies of inputs named by URIs (``NERLAB_CACHE``, else ``~/.cache/nerlab``)."""
    return Path(os.environ.get("NERLAB_CACHE") or Path.home() / ".cache" / "nerlab") / "inputs"


def local(place: str | None) -> str | None:
    """A data file or a PLM folder on this node: ``place`` itself, or for an ``s3://`` URI its copy in this
    node's cache, fetched once per node and per version of the objects (the copy's name hashes the URI with
    every object's size and time). FileNotFoundError names the URI when nothing is there."""
    if place is None or not is_uri(place):
        return place
    import pyarrow.fs as pafs

    from nerlab.platform.tracking import patient_s3

    fs, path = patient_s3.from_uri(place)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{place}: no such object or folder")
    files = [info] if info.type == pafs.FileType.File else \
        [f for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.type == pafs.FileType.File]
    version = json.dumps([place, *sorted((f.path, f.size, f.mtime_ns) for f in files)])
    folder = cache_root() / hashlib.sha256(version.encode()).hexdigest()[:20]
    target = folder / PurePosixPath(path).name
    if not folder.is_dir():  # concurrent fetchers each fill a folder of their own; the first rename wins
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for f in files:  # pyarrow copies a folder's files into folders that must exist
            (tmp / target.name / PurePosixPath(f.path).relative_to(path)).parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(tmp / target.name), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        try:
            tmp.rename(folder)
        except OSError:  # another process was first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def publish(folder: str, uri: str) -> str:
    """Copy a folder this node built (a synthetic corpus, a tiny PLM) to ``uri``, once: a folder whose
    completion marker is there is taken as it is. Returns ``uri``."""
    import pyarrow.fs as pafs

    from nerlab.platform.tracking import patient_s3

    fs, path = patient_s3.from_uri(uri)
    if fs.get_file_info(f"{path}/{COMPLETE}").type != pafs.FileType.File:
        pafs.copy_files(folder, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        with fs.open_output_stream(f"{path}/{COMPLETE}") as sink:
            sink.write(b"ok")
    return uri
