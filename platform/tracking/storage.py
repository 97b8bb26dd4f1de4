"""Where a study's trials keep their checkpoints: Tune's experiment state and inline trials' checkpoints
(``tune/``) and Ray Train jobs' checkpoints (``ray-train/``).

By default the study's output folder, as before. The spec key ``storage`` names another place: a folder
every node mounts, or an object store URI (``s3://BUCKET/PREFIX``), which Ray writes through pyarrow's
file systems, so nodes that share no disk still resume each other's trials. pyarrow's ``from_uri`` reads
the endpoint and credentials from the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), on the driver and on every node alike.

A study's checkpoints live under ``STORAGE/NAME-DIGEST`` (the spec's digest): a study replaced with
``--replace`` (another spec) starts afresh instead of restoring the old one's Tune state.
"""

from __future__ import annotations

from pathlib import Path

from nerlab.platform.specs.paths import writable_folder
from nerlab.platform.errors import SpecError


def is_uri(place: str) -> bool:
    return "://" in place


def join(root: str, *parts: str) -> str:
    """``root``/parts for a folder or a URI (no Path: it would fold ``s3://`` into ``s3:/``)."""
    return "/".join([root.rstrip("/"), *parts])


def study_root(storage: str | None, output: str, name: str, digest: str) -> str:
    """The folder or URI under which a study's ``tune/`` and ``ray-train/`` go."""
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
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"{where}: {storage}: {first}") from None
