"""Recordings in an S3 bucket (AWS or any S3-protocol server), through boto3.

``VOICEMAIL_STORAGE_URL=s3://bucket/prefix`` names the bucket and a key prefix; the endpoint
(``VOICEMAIL_S3_ENDPOINT_URL``) and region (``VOICEMAIL_S3_REGION``) are optional, and the
credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, an instance role...), so no secret ever passes through our settings.

The bucket is never created here: a missing bucket is an operator's mistake that ``/readyz``
reports, not something to paper over with a bucket in the wrong region or without policies.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from voicemail.errors import ServiceUnavailable
from voicemail.storage.base import ObjectNotFound, StoredObject, check_key

if TYPE_CHECKING:
    from voicemail.settings import Settings

# Enough for the API's thread pool (40) and a worker's jobs to share one client without
# queueing on the pool; urllib3 opens connections on demand, so an idle process holds few.
MAX_POOL_CONNECTIONS = 50
_CONTENT_TYPES = {".wav": "audio/wav"}  # mimetypes says "audio/x-wav" on Linux
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_BUCKET_MISSING_CODES = {"NoSuchBucket"}
# No answer from the endpoint: refused, timed out, dropped (HTTPClientError covers the last two).
_UNREACHABLE = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


def _content_type(key: str) -> str:
    return _CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), "application/octet-stream")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Storage:
    list_page_size = 1000  # keys per ListObjectsV2 call; S3's own maximum

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self._client: Any = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        bucket, prefix = settings.s3_location
        return cls(bucket, prefix, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- plumbing --------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (not at import or start-up).

        Clients are thread-safe and shared; sessions are not, so the session that makes the
        client is private to this call and the lock keeps two threads from racing to make one.
        """
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    session = boto3.session.Session()
                    self._client = session.client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region,
                        config=Config(
                            # SigV4 for presigned URLs too (boto3 defaults them to SigV2,
                            # which newer AWS regions refuse).
                            signature_version="s3v4",
                            max_pool_connections=MAX_POOL_CONNECTIONS,
                            connect_timeout=5,
                            read_timeout=30,
                            retries={"mode": "standard", "max_attempts": 3},
                        ),
                    )
        return self._client

    def _object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative_key(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1 :] if self.prefix else object_key

    def _unavailable(self, exc: Exception) -> ServiceUnavailable:
        """A failure of the storage service itself, as a 503 with no endpoint details."""
        if isinstance(exc, ClientError) and _error_code(exc) in _BUCKET_MISSING_CODES:
            return ServiceUnavailable(f"S3 bucket {self.bucket!r} does not exist")
        if isinstance(exc, NoCredentialsError):
            return ServiceUnavailable("No AWS credentials found for S3 storage")
        if isinstance(exc, _UNREACHABLE):
            return ServiceUnavailable("Cannot reach the S3 endpoint; try again later")
        return ServiceUnavailable("Object storage is unavailable; try again later")

    def _is_service_failure(self, exc: Exception) -> bool:
        if isinstance(exc, (*_UNREACHABLE, NoCredentialsError)):
            return True
        if isinstance(exc, ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return _error_code(exc) in _BUCKET_MISSING_CODES or int(status) >= 500
        return False

    def _call(self, operation: str, key: str | None = None, **params: Any) -> Any:
        """One S3 call; a missing object becomes ObjectNotFound, an outage a 503."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            if key is not None and _error_code(exc) in _NOT_FOUND_CODES:
                raise ObjectNotFound(key) from exc
            if self._is_service_failure(exc):
                raise self._unavailable(exc) from exc
            raise
        except BotoCoreError as exc:
            if self._is_service_failure(exc):
                raise self._unavailable(exc) from exc
            raise

    # -- the Storage protocol --------------------------------------------------------------

    def put_file(self, key: str, source: Path) -> None:
        # One PutObject, not a multipart upload: S3 makes it visible all at once or not at
        # all, and a process killed mid-upload leaves no parts behind. Recordings are far
        # below PutObject's 5 GB limit.
        object_key = self._object_key(key)
        with source.open("rb") as body:
            self._call("put_object", Key=object_key, Body=body, ContentType=_content_type(key))

    def read_bytes(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range {start}-{end}")
        object_key = self._object_key(key)
        params: dict[str, Any] = {"Key": object_key}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = self._call("get_object", key, **params)
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":
                return b""  # past the end (or an empty object): as a file read would
            raise
        with response["Body"] as body:
            data: bytes = body.read()
        return data

    def size(self, key: str) -> int:
        # HeadObject answers a missing bucket with the same bodiless 404 as a missing key,
        # so that reads as ObjectNotFound here; GetObject and /readyz tell them apart.
        response = self._call("head_object", key, Key=self._object_key(key))
        return int(response["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        # DeleteObject succeeds for a missing key, as the protocol wants.
        self._call("delete_object", Key=self._object_key(key))

    def local_path(self, key: str) -> Path | None:
        return None

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        list_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            pages = paginator.paginate(
                Bucket=self.bucket,
                Prefix=list_prefix,
                PaginationConfig={"PageSize": self.list_page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(
                        self._relative_key(item["Key"]),
                        int(item["Size"]),
                        item["LastModified"].timestamp(),
                    )
        except (ClientError, BotoCoreError) as exc:
            if self._is_service_failure(exc):
                raise self._unavailable(exc) from exc
            raise

    def presigned_url(self, key: str, *, expires_seconds: int) -> str | None:
        # Signed locally (no request to S3). The response overrides make a browser play the
        # recording inline with the right type whatever metadata the object was stored with.
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._object_key(key),
                "ResponseContentType": _content_type(key),
                "ResponseContentDisposition": "inline",
            },
            ExpiresIn=max(1, expires_seconds),
        )
        return url

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            # HeadBucket has no body, so a missing bucket comes back as a bare "404".
            if _error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                raise ServiceUnavailable(f"S3 bucket {self.bucket!r} does not exist") from exc
            if _error_code(exc) in {"403", "AccessDenied", "Forbidden"}:
                raise ServiceUnavailable(f"Access to S3 bucket {self.bucket!r} denied") from exc
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc
