"""S3 and S3-compatible stores (MinIO, Ceph) through boto3's default credential chain."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from bgeflow.core.errors import NotFoundError, StepFailed
from bgeflow.core.storage.base import (
    _READ_CHUNK,
    DEFAULT_WORKERS,
    ObjectInfo,
    StorageError,
    Store,
    is_hidden_key,
    join_key,
    join_uri,
    matches_suffixes,
    redact,
    staged_file,
)


@lru_cache(maxsize=8)
def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A shared, thread-safe S3 client.

    Retries: botocore's "standard" mode (exponential backoff, throttling aware). Checksums: only
    when an operation requires one, because the newer default CRC trailers are rejected by MinIO
    and several other S3-compatible stores.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": int(os.environ.get("BGEFLOW_S3_MAX_ATTEMPTS", "5"))},
        max_pool_connections=max(DEFAULT_WORKERS * 2, 10),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=config,
    )


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    @property
    def client(self) -> Any:
        return s3_client(self.endpoint_url)

    def child(self, key: str) -> S3Store:
        return S3Store(self.bucket, join_key(self.prefix, key), endpoint_url=self.endpoint_url)

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _wrap(self, exc: Exception, key: str, action: str) -> StorageError:
        return StorageError(f"cannot {action} {join_uri(self.uri, key)}: {exc}")

    def list(self, suffixes: tuple[str, ...] = (), *, hidden: bool = False) -> list[ObjectInfo]:
        own = self.stat("") if self.prefix else None
        if own is not None:
            return [own] if matches_suffixes(self.prefix, suffixes) else []
        base = self.prefix + "/" if self.prefix else ""
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(base) :]
                    if rel and (hidden or not is_hidden_key(rel)) and matches_suffixes(rel, suffixes):
                        modified = obj.get("LastModified")
                        out.append(ObjectInfo(rel, obj["Size"], obj.get("ETag", "").strip('"'),
                                              modified.timestamp() if modified is not None else None))
        except Exception as exc:
            raise self._wrap(exc, "", "list") from exc
        return sorted(out, key=lambda o: o.key)

    def stat(self, key: str = "") -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._wrap(exc, key, "stat") from exc
        except Exception as exc:
            raise self._wrap(exc, key, "stat") from exc
        return ObjectInfo(key, head["ContentLength"], head.get("ETag", "").strip('"'))

    def open_read(self, key: str = "") -> IO[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            raise self._wrap(exc, key, "read") from exc
        return _StreamingBody(body)

    def put_file(self, local_path: str | Path, key: str, *, if_absent: bool = False) -> None:
        from boto3.s3.transfer import TransferConfig

        try:
            if if_absent:
                # S3 conditional writes (If-None-Match: *); stores that lack them ignore the header,
                # so the caller's own existence check still guards.
                if self.exists(key):
                    raise FileExistsError(f"{join_uri(self.uri, key)} already exists")
                with open(local_path, "rb") as fh:
                    self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=fh, IfNoneMatch="*")
            else:
                self.client.upload_file(
                    str(local_path), self.bucket, self._key(key), Config=TransferConfig(use_threads=False)
                )
        except FileExistsError:
            raise
        except Exception as exc:
            if "PreconditionFailed" in str(exc):
                raise FileExistsError(f"{join_uri(self.uri, key)} already exists") from exc
            raise self._wrap(exc, key, "write") from exc

    def get_file(self, key: str, local_path: str | Path) -> None:
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(local_path.parent, suffix=".part") as tmp:
            with self.open_read(key) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _READ_CHUNK)
            os.replace(tmp, local_path)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._wrap(exc, key, "delete") from exc


class _StreamingBody(io.RawIOBase):
    """botocore's StreamingBody as a proper file object (so gzip and io.BufferedReader accept it)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def check_reachable(uris: Iterable[str | None]) -> None:
    """Fail fast, in one line naming the endpoint, when the S3 store behind ``uris`` cannot be reached.

    One attempt with short timeouts: the normal client retries for a while, which is right for a
    flaky network in a pod but makes a typo in ``--s3-endpoint-url`` look like a hang.
    """
    buckets = sorted({u[len("s3://"):].split("/", 1)[0] for u in uris if u and u.startswith("s3://")})
    if not buckets:
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client: Any = boto3.session.Session().client(
        "s3", endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 1}),
    )
    where = redact(client.meta.endpoint_url)
    for bucket in buckets:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise NotFoundError(f"S3 bucket {bucket!r} does not exist at {where}") from None
            if code in ("403", "AccessDenied"):
                # Credentials may allow objects but not HeadBucket; the endpoint answered, which is all we check.
                continue
            raise StepFailed(redact(f"S3 endpoint {where} refused bucket {bucket!r}: {code or exc}")) from None
        except BotoCoreError as exc:
            # botocore quotes the endpoint URL, userinfo and all.
            raise StepFailed(redact(f"cannot reach S3 endpoint {where} (bucket {bucket!r}): {exc}")) from None
