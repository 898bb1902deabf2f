"""Fixtures for the s3 service (see tests/services/__init__.py).

The S3-protocol server is moto's standalone ``moto_server``, started here as a subprocess on a
free port for the test session and stopped at its end. It runs with IAM authentication on
(``INITIAL_NO_AUTH_ACTION_COUNT``): after the three unauthenticated calls that create a user
and its access key, every request must carry a valid AWS signature made with that key, so the
tests prove that our boto3 client really signs with the credentials it finds in the
environment.

moto cannot check presigned (query-string) signatures in that mode (it answers 500), so the
tests that follow a presigned URL use a second server with authentication off.

Each test gets its own bucket (a random name, emptied and removed afterwards) and fake
credentials in ``AWS_*`` variables, so concurrent runs and tests never share objects.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.helpers.net import free_port
from tests.services import unavailable
from voicemail.settings import Settings

REGION = "us-east-1"
BUCKET_PREFIX = "voicemail-test-"
STORAGE_PREFIX = "recordings"
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    log: Path

    def client(self) -> Any:
        """A boto3 client for test set-up and inspection, independent of the code under test."""
        return boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=REGION,
        ).client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(signature_version="s3v4", retries={"max_attempts": 1}),
        )

    def create_bucket(self) -> str:
        name = BUCKET_PREFIX + uuid.uuid4().hex[:16]
        self.client().create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            if page.get("Contents"):
                objects = [{"Key": item["Key"]} for item in page["Contents"]]
                client.delete_objects(Bucket=name, Delete={"Objects": objects})
        client.delete_bucket(Bucket=name)


@dataclass(frozen=True)
class S3Bucket:
    """A test's own bucket on a server; ``settings_for`` points a Settings copy at it."""

    server: S3Server
    name: str

    @property
    def storage_url(self) -> str:
        return f"s3://{self.name}/{STORAGE_PREFIX}"

    def settings_for(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={
                "storage_url": self.storage_url,
                "s3_endpoint_url": self.server.endpoint_url,
                "s3_region": REGION,
            }
        )

    def object_key(self, storage_key: str) -> str:
        """The S3 key a storage key is kept under."""
        return f"{STORAGE_PREFIX}/{storage_key}"

    def read(self, storage_key: str) -> bytes:
        response = self.server.client().get_object(
            Bucket=self.name, Key=self.object_key(storage_key)
        )
        with response["Body"] as body:
            data: bytes = body.read()
        return data


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    # A TCP connect, not an HTTP request: in IAM mode every HTTP call could count against
    # the unauthenticated allowance that set-up needs.
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            unavailable(f"moto_server exited with {process.returncode}: {tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    unavailable(f"moto_server did not listen on port {port} within {START_TIMEOUT_SECONDS} s")


def _start_moto(log: Path, *, iam: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
    if iam:
        # Only the three set-up calls of _create_iam_user run unauthenticated.
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    try:
        with log.open("wb") as output:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
            )
    except OSError as exc:
        unavailable(f"cannot start moto_server: {exc}")
        raise
    try:
        _wait_for_port(process, port, log)
    except BaseException:
        _stop(process)
        raise
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _create_iam_user(endpoint_url: str) -> tuple[str, str]:
    iam = boto3.session.Session(
        aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", region_name=REGION
    ).client("iam", endpoint_url=endpoint_url)
    iam.create_user(UserName="voicemail")
    iam.put_user_policy(
        UserName="voicemail",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="voicemail")["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto_server checking every request's signature against a user it issued keys to."""
    log = tmp_path_factory.mktemp("moto-iam") / "moto_server.log"
    process, endpoint_url = _start_moto(log, iam=True)
    try:
        access_key_id, secret = _create_iam_user(endpoint_url)
        yield S3Server(endpoint_url, access_key_id, secret, log)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def s3_open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto_server without authentication: the one that serves presigned URLs."""
    log = tmp_path_factory.mktemp("moto-open") / "moto_server.log"
    process, endpoint_url = _start_moto(log, iam=False)
    try:
        yield S3Server(endpoint_url, "AKIAOPENSERVERTESTKEY", "open-server-test-secret", log)
    finally:
        _stop(process)


def use_credentials(monkeypatch: pytest.MonkeyPatch, server: S3Server) -> None:
    """Put the server's keys where boto3's credential chain finds them, and nothing else."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    # A developer's ~/.aws and the EC2 metadata service must not leak into the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _bucket_on(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    use_credentials(monkeypatch, server)
    name = server.create_bucket()
    yield S3Bucket(server, name)
    server.remove_bucket(name)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new bucket for this test on the authenticating server, with credentials set."""
    yield from _bucket_on(s3_server, monkeypatch)


@pytest.fixture
def s3_open_bucket(s3_open_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A new bucket on the server that serves presigned URLs."""
    yield from _bucket_on(s3_open_server, monkeypatch)


@pytest.fixture
def s3_settings(settings: Settings, s3_bucket: S3Bucket) -> Settings:
    """The test's settings with recordings in ``s3://<its bucket>/recordings``."""
    return s3_bucket.settings_for(settings)
