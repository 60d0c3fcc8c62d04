"""S3 through boto3: buckets for the DVC remote and the MLflow artifact store on any S3
endpoint (AWS, MinIO, SeaweedFS, moto...).

Credentials come only from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, profiles); nothing here logs, returns or
writes them to a tracked file. Calls retry a bounded number of times with backoff, then
fail with an error that names the endpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    pass


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None      # None: AWS itself

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None) -> "S3Location":
        if not url.startswith("s3://"):
            raise StorageError(f"{url!r} is not an s3:// URL")
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise StorageError(f"{url!r} names no bucket")
        return cls(bucket, prefix.strip("/"), endpoint_url)


def client(endpoint_url: str | None = None, attempts: int = 3, timeout: float = 5.0):
    """A boto3 S3 client with bounded retries and short timeouts."""
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=timeout,
                 read_timeout=max(timeout, 30.0), signature_version="s3v4")
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=cfg)   # fresh credentials


def _where(loc: S3Location) -> str:
    return loc.endpoint_url or "the AWS S3 endpoint"


def with_retries(what: str, endpoint: str, fn, attempts: int = 3, backoff: float = 0.5):
    """Run `fn()`; on connection errors retry with exponential backoff, then raise StorageError."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (EndpointConnectionError, ConnectionError) as exc:
            if attempt == attempts:
                raise StorageError(f"cannot reach S3 at {endpoint} to {what} after {attempts} attempts: "
                                   f"{type(exc).__name__}. Is the server running and the endpoint URL right?") from None
            log.warning("S3 at %s unreachable (%s), retry %d/%d", endpoint, type(exc).__name__, attempt, attempts)
            time.sleep(backoff * 2 ** (attempt - 1))
        except NoCredentialsError:
            raise StorageError(f"no S3 credentials for {endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(or AWS_PROFILE)") from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise StorageError(f"S3 at {endpoint} refused to {what}: {code}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 at {endpoint}: cannot {what}: {type(exc).__name__}") from None


def ensure_bucket(loc: S3Location, attempts: int = 3) -> bool:
    """Create the bucket if it does not exist; returns True when it was created."""
    from botocore.exceptions import ClientError

    s3 = client(loc.endpoint_url, attempts=1)

    def head_or_create() -> bool:
        try:
            s3.head_bucket(Bucket=loc.bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
        s3.create_bucket(Bucket=loc.bucket)
        log.info("created bucket %s at %s", loc.bucket, _where(loc))
        return True

    return with_retries(f"check bucket {loc.bucket}", _where(loc), head_or_create, attempts)


def list_keys(loc: S3Location) -> list[str]:
    s3 = client(loc.endpoint_url)

    def listing() -> list[str]:
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    return with_retries(f"list {loc.url}", _where(loc), listing)


def configure_dvc_remote(repo: str | Path, loc: S3Location, name: str = "s3", default: bool = True) -> None:
    """Point a DVC remote at `loc`. Only the URL and endpoint go into `.dvc/config`;
    credentials stay in the environment (DVC's S3 remote reads the AWS variables)."""
    from components.storage.dvc import run_dvc

    ensure_bucket(loc)
    run_dvc("remote", "add", "--force", *(["--default"] if default else []), name, loc.url, repo=repo)
    if loc.endpoint_url:
        run_dvc("remote", "modify", name, "endpointurl", loc.endpoint_url, repo=repo)
    log.info("DVC remote %r -> %s (endpoint %s)", name, loc.url, _where(loc))
