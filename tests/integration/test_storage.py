"""One contract for every storage backend: a folder, memory, and S3 (a real moto_server).

The API, the worker and the data migration only ever see the ``Storage`` protocol, so each
backend must answer the same calls the same way: ranges as HTTP Range clamps them, missing
objects as ``ObjectNotFound``, bad keys as ``ValueError``, never a half-written object.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.services.s3 import REGION, STORAGE_PREFIX, S3Bucket, S3Server
from voicemail.errors import ServiceUnavailable
from voicemail.settings import Settings
from voicemail.storage import LocalStorage, MemoryStorage, ObjectNotFound, Storage, open_storage
from voicemail.storage.s3 import S3Storage

KEY = "o-1/st-2/2026/29-11-2026/f-3.wav"
DATA = os.urandom(300_000)  # several of the media route's chunks, not all the same byte


def s3_storage(bucket: S3Bucket, prefix: str = STORAGE_PREFIX) -> S3Storage:
    return S3Storage(bucket.name, prefix, endpoint_url=bucket.server.endpoint_url, region=REGION)


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "recordings")
    elif request.param == "memory":
        yield MemoryStorage()
    else:
        yield s3_storage(request.getfixturevalue("s3_bucket"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "upload.wav"
    path.write_bytes(DATA)
    return path


def write(tmp_path: Path, data: bytes, name: str = "other.wav") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_put_then_read_size_exists(storage: Storage, source: Path) -> None:
    assert not storage.exists(KEY)
    storage.put_file(KEY, source)
    assert storage.exists(KEY)
    assert storage.size(KEY) == len(DATA)
    assert storage.read_bytes(KEY) == DATA
    storage.check()


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 0),
        (0, 99),
        (1, 1),
        (100, None),
        (299_999, None),
        (299_999, 299_999),
        (1000, 200_000),
        (10, 10_000_000),  # past the end: clamped, as HTTP Range is
    ],
)
def test_read_ranges(storage: Storage, source: Path, start: int, end: int | None) -> None:
    storage.put_file(KEY, source)
    expected = DATA[start:] if end is None else DATA[start : end + 1]
    assert storage.read_bytes(KEY, start, end) == expected


@pytest.mark.parametrize(("start", "end"), [(300_000, None), (300_000, 300_010), (10**9, None)])
def test_read_starting_past_the_end_is_empty(
    storage: Storage, source: Path, start: int, end: int | None
) -> None:
    storage.put_file(KEY, source)
    assert storage.read_bytes(KEY, start, end) == b""


def test_empty_object(storage: Storage, tmp_path: Path) -> None:
    storage.put_file(KEY, write(tmp_path, b""))
    assert storage.exists(KEY)
    assert storage.size(KEY) == 0
    assert storage.read_bytes(KEY) == b""
    assert storage.read_bytes(KEY, 0, 10) == b""


def test_missing_object(storage: Storage) -> None:
    missing = "o-1/st-2/2026/29-11-2026/f-missing.wav"
    assert not storage.exists(missing)
    with pytest.raises(ObjectNotFound):
        storage.read_bytes(missing)
    with pytest.raises(ObjectNotFound):
        storage.read_bytes(missing, 0, 9)
    with pytest.raises(ObjectNotFound):
        storage.size(missing)
    storage.delete(missing)  # not an error


def test_delete(storage: Storage, source: Path) -> None:
    storage.put_file(KEY, source)
    storage.delete(KEY)
    assert not storage.exists(KEY)
    with pytest.raises(ObjectNotFound):
        storage.read_bytes(KEY)
    assert list(storage.iter_objects()) == []
    storage.delete(KEY)  # twice is fine


def test_overwrite_replaces_the_whole_object(
    storage: Storage, source: Path, tmp_path: Path
) -> None:
    storage.put_file(KEY, source)
    storage.put_file(KEY, write(tmp_path, b"short"))
    assert storage.read_bytes(KEY) == b"short"
    assert storage.size(KEY) == 5
    assert [item.key for item in storage.iter_objects()] == [KEY]


def test_failed_put_stores_nothing(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        storage.put_file(KEY, tmp_path / "does-not-exist.wav")
    assert not storage.exists(KEY)
    assert list(storage.iter_objects()) == []


INVALID_KEYS = [
    "",
    "/etc/passwd",
    "../outside.wav",
    "a/../../outside.wav",
    "a//b.wav",
    "a/b c.wav",
    "a\\b.wav",
    "a/b.wav\n",
    "ключ.wav",
    "x" * 401,
]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused(storage: Storage, source: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put_file(key, source)
    for call in (storage.read_bytes, storage.size, storage.exists, storage.delete):
        with pytest.raises(ValueError, match="invalid storage key"):
            call(key)
    assert list(storage.iter_objects()) == []


def test_iter_objects(storage: Storage, tmp_path: Path) -> None:
    before = time.time()
    keys = {"a/1.wav": b"1", "a/2.wav": b"22", "b/3.wav": b"333", "ab.wav": b"4444"}
    for key, data in keys.items():
        storage.put_file(key, write(tmp_path, data))
    listed = list(storage.iter_objects())
    assert sorted(item.key for item in listed) == sorted(keys)
    for item in listed:
        assert item.size == len(keys[item.key])
        # S3 keeps whole seconds; allow for that and for clock skew to the server.
        assert before - 5 <= item.modified <= time.time() + 5
    assert sorted(item.key for item in storage.iter_objects("a/")) == ["a/1.wav", "a/2.wav"]
    assert sorted(item.key for item in storage.iter_objects("a")) == [
        "a/1.wav",
        "a/2.wav",
        "ab.wav",
    ]
    assert list(storage.iter_objects("zzz/")) == []


def test_local_path_only_for_the_folder(storage: Storage, source: Path) -> None:
    storage.put_file(KEY, source)
    path = storage.local_path(KEY)
    if isinstance(storage, LocalStorage):
        assert path is not None and path.read_bytes() == DATA
    else:
        assert path is None


def test_presigned_urls_only_from_s3(storage: Storage, source: Path) -> None:
    storage.put_file(KEY, source)
    url = storage.presigned_url(KEY, expires_seconds=60)
    if isinstance(storage, S3Storage):
        assert url is not None and f"/{STORAGE_PREFIX}/{KEY}?" in url
        assert "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
    else:
        assert url is None


# ------------------------------------------------------------------ S3 only


def test_s3_objects_live_under_the_prefix(s3_bucket: S3Bucket, source: Path) -> None:
    s3_storage(s3_bucket).put_file(KEY, source)
    assert s3_bucket.read(KEY) == DATA  # at recordings/<key>, read with another client
    head = s3_bucket.server.client().head_object(
        Bucket=s3_bucket.name, Key=s3_bucket.object_key(KEY)
    )
    assert head["ContentType"] == "audio/wav"
    # Objects outside the prefix are not ours: never listed, never reachable by key.
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key="other/x.wav", Body=b"x")
    assert [item.key for item in s3_storage(s3_bucket).iter_objects()] == [KEY]


def test_s3_without_a_prefix_uses_the_bucket_root(s3_bucket: S3Bucket, source: Path) -> None:
    storage = s3_storage(s3_bucket, prefix="")
    storage.put_file(KEY, source)
    assert s3_bucket.server.client().head_object(Bucket=s3_bucket.name, Key=KEY)
    assert [item.key for item in storage.iter_objects()] == [KEY]


def test_s3_listing_follows_every_page(s3_bucket: S3Bucket) -> None:
    storage = s3_storage(s3_bucket)
    storage.list_page_size = 2  # S3 pages at 1000 keys; small pages show the same thing fast
    client = s3_bucket.server.client()
    keys = [f"many/{index}.wav" for index in range(7)]
    for key in keys:
        client.put_object(Bucket=s3_bucket.name, Key=s3_bucket.object_key(key), Body=b"")
    assert [item.key for item in storage.iter_objects("many/")] == keys


def test_open_storage_reads_the_s3_settings(
    s3_bucket: S3Bucket, source: Path, tmp_path: Path
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path / "data",
        storage_url=s3_bucket.storage_url + "/",
        s3_endpoint_url=s3_bucket.server.endpoint_url,
        s3_region=REGION,
    )
    storage = open_storage(settings)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == (s3_bucket.name, STORAGE_PREFIX)
    storage.put_file(KEY, source)
    assert s3_bucket.read(KEY) == DATA


def test_s3_signs_with_the_credentials_in_the_environment(
    s3_bucket: S3Bucket, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server checks signatures, so a wrong AWS_SECRET_ACCESS_KEY must be refused.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    storage = s3_storage(s3_bucket)
    with pytest.raises(ServiceUnavailable, match="denied"):
        storage.check()
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        storage.put_file(KEY, source)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.server.secret_access_key)
    assert not s3_storage(s3_bucket).exists(KEY)


def test_s3_check_names_a_missing_bucket(s3_server: S3Server, s3_bucket: S3Bucket) -> None:
    storage = S3Storage("voicemail-test-no-such-bucket", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ServiceUnavailable, match="'voicemail-test-no-such-bucket' does not exist"):
        storage.check()
    with pytest.raises(ServiceUnavailable, match="does not exist"):
        storage.read_bytes(KEY)  # a missing bucket is an outage, not a missing recording


def test_s3_unreachable_endpoint_is_service_unavailable(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.name, endpoint_url="http://127.0.0.1:9", region=REGION)
    with pytest.raises(ServiceUnavailable, match="Cannot reach"):
        storage.check()
    with pytest.raises(ServiceUnavailable, match="Cannot reach"):
        storage.read_bytes(KEY)


def test_s3_client_is_made_once_however_many_threads_race_for_it(
    s3_bucket: S3Bucket, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_storage(s3_bucket).put_file(KEY, source)
    storage = s3_storage(s3_bucket)
    assert storage._client is None  # building storage contacts nothing
    made: list[object] = []
    make_client = boto3.session.Session.client

    def slow_client(session: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = make_client(session, *args, **kwargs)
        made.append(client)
        # Hold the window open: every racing thread is past its first look by now, so a
        # missing lock (or a missing second look under it) makes one client per thread.
        time.sleep(0.3)
        return client

    monkeypatch.setattr(boto3.session.Session, "client", slow_client)
    racers = 8
    together = threading.Barrier(racers)

    def read(index: int) -> bytes:
        together.wait(timeout=30)  # all threads ask for the client at the same moment
        return storage.read_bytes(KEY, index * 1000, index * 1000 + 999)

    with ThreadPoolExecutor(max_workers=racers) as pool:
        results = list(pool.map(read, range(racers)))
    assert results == [DATA[index * 1000 : (index + 1) * 1000] for index in range(racers)]
    assert len(made) == 1
    assert storage.client is made[0]
