"""pyarrow's S3 file system, patient enough to outlast an object store's restart.

pyarrow's default (AWS "standard" retries, 3 attempts) gives up on a refused connection within a second or
two, so a checkpoint saved or restored while the store restarts fails its trial, and Tune's restarts of it
fail as fast. With ``ATTEMPTS`` attempts the AWS SDK backs off exponentially (at most 20 s apart) for about
two minutes before an operation fails. Errors that retrying cannot mend (refused credentials, a missing
bucket) still fail at once.

pyarrow does not pickle a file system's retry strategy; Ray pickles the file system to every trial and
worker, so ``PatientS3`` pickles as its options and rebuilds itself, retries included, wherever it lands.
Imported only for ``s3://`` storage (it imports pyarrow).
"""

from __future__ import annotations

import pyarrow.fs as pafs

ATTEMPTS = 12  # backoff 1, 2, 4, 8, 16, then 20 s at most: about two minutes of outage


class PatientS3(pafs.S3FileSystem):
    def __init__(self, options: dict):
        self.options = options
        super().__init__(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS))

    def __reduce__(self):
        return PatientS3, (self.options,)


def from_uri(uri: str) -> tuple[PatientS3, str]:
    """The file system and the path (``BUCKET/PREFIX``) of an ``s3://`` URI; endpoint, region and credentials
    resolved from the URI and the environment (``AWS_ENDPOINT_URL``...) as pyarrow's ``from_uri`` does."""
    plain, path = pafs.FileSystem.from_uri(uri)
    _, (options,) = plain.__reduce__()
    return PatientS3(options), path
