"""Settings: one class, read from ``VOICEMAIL_*`` environment variables (and ``.env``).

Built once at start-up and passed down (``create_app(settings)``, ``Worker(settings)``);
nothing reads settings from a module global.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SIGNING_KEY_FILE = "signing.key"
# S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOICEMAIL_", env_file=".env", extra="ignore", validate_default=True
    )

    data_dir: Path = Path("./voicemail-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite under data_dir"
    )
    storage_url: str | None = Field(
        default=None,
        description="Where recordings go: a folder (or file:// URL), or s3://bucket/prefix; "
        "default data_dir/recordings",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto...); default AWS"
    )
    s3_region: str | None = Field(default=None, description="default: the AWS SDK's own")
    media_redirect: bool = Field(
        default=False,
        description="Answer a signed media URL with a redirect to a short-lived S3 presigned "
        "URL instead of streaming the recording through the API (S3 storage only)",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://... shared by every API process for rate limits and JTI "
        "replay protection; default: in-process memory (one process only)",
    )
    redis_key_prefix: str = Field(default="voicemail", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    public_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL put in media links"
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="Master key for media URL signatures and app-secret encryption; "
        "generated into data_dir when not given",
    )

    # Media
    media_url_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=7 * 24 * 3600)
    media_environment: str = Field(default="PROD", pattern=r"^[A-Za-z0-9_-]{1,32}$")

    # API limits
    rate_limit_per_minute: int = Field(default=60, ge=1)
    deposit_rate_limit_per_minute: int = Field(default=600, ge=1)
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)

    # Deposit limits
    min_duration_seconds: float = Field(default=1.0, gt=0)
    max_duration_seconds: float = Field(default=600.0, gt=0)
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)

    # Live deposit over WebSocket (jambonz `listen`)
    stream_reconnect_seconds: float = Field(
        default=10.0,
        gt=0,
        description="After an abrupt disconnect, how long a live voicemail waits for the "
        "gateway to reconnect with the same callSid before it is finalized",
    )
    stream_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often a live call's audio is written to storage (a crashed API "
        "process loses at most this much); must be below stream_reconnect_seconds",
    )
    live_transcription: bool = Field(
        default=True,
        description="Transcribe live calls as the audio arrives; false: after hang-up, by a job",
    )

    # Speech recognition
    asr_model: Path | None = Field(
        default=None, description="A CTranslate2 Whisper folder; default: the packaged base model"
    )
    asr_device: Literal["cpu", "cuda", "auto"] = "cpu"
    asr_compute_type: str = "int8"
    asr_threads: int = Field(default=0, ge=0, description="0 means one per CPU core")
    asr_beam_size: int = Field(default=1, ge=1, le=10)
    model_cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "voicemail"
        )
    )

    # Jobs
    job_lease_seconds: int = Field(default=300, ge=5)
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    job_retry_base_seconds: float = Field(default=10.0, ge=0)
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    worker_concurrency: int = Field(
        default=1, ge=1, le=64, description="Jobs one `voicemail worker` process runs at once"
    )
    embedded_worker: bool | None = Field(
        default=None, description="Run a worker inside `serve`; default: only on SQLite"
    )
    orphan_grace_seconds: int = Field(
        default=3600,
        ge=60,
        description="A stored recording with no voicemail row is deleted once it is this old "
        "(left by a deposit killed between storing the audio and committing its row); "
        "far longer than any deposit takes",
    )
    orphan_sweep_seconds: int = Field(
        default=3600, ge=60, description="How often workers look for such orphan recordings"
    )
    purge_interval_seconds: int = Field(
        default=3600,
        ge=60,
        description="How often workers delete voicemails older than their bot's retention",
    )
    audit_flush_seconds: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="Fetch and media-access audit entries are written in batches this often "
        "(0: each at once, in the request)",
    )
    purge_batch_size: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Voicemails deleted per purge transaction (keeps each one short)",
    )

    # Webhooks
    webhook_retry_base_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Delay after a delivery's first failed attempt; it doubles after each "
        "further failure, up to webhook_retry_max_seconds",
    )
    webhook_retry_max_seconds: float = Field(
        default=3600.0, ge=0, description="The longest wait between two attempts"
    )
    webhook_retry_window_seconds: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="Retries stop (the delivery is marked failed) once the next attempt would "
        "fall this long after the event",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Connect/read timeout of one delivery attempt"
    )
    webhook_poll_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How often workers look for deliveries due"
    )

    # Web inbox
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="How long an inbox sign-in lasts"
    )
    cookie_secure: bool = Field(
        default=True,
        description="Send the inbox cookies over HTTPS only. Browsers treat http://localhost "
        "and 127.0.0.1 as secure, so the default works locally; turn off only behind a proxy "
        "that serves plain HTTP to other hosts",
    )
    inbox_poll_seconds: float = Field(
        default=5.0, gt=0, le=300, description="How often an open inbox looks for new voicemails"
    )
    alert_check_seconds: int = Field(
        default=60, ge=1, description="How often workers compare queue backlogs with alerts"
    )

    # Hostile clients: what one request may make the HTTP server hold (issue 9)
    ws_max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024 * 1024,
        description="Largest WebSocket message (live deposit) the server reads; a larger one "
        "closes the connection with 1009. Gateways send audio frames of a few KB (100 ms of "
        "16-bit 64 kHz stereo is 25 KB); a large bound lets one client make the server hold "
        "that much per connection before the app sees it.",
    )

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("storage_url")
    @classmethod
    def _storage_url_supported(cls, value: str | None) -> str | None:
        if value is None or "://" not in value or value.startswith("file://"):
            return value
        if value.startswith("s3://"):
            bucket = value.removeprefix("s3://").split("/", 1)[0]
            if not _BUCKET_RE.fullmatch(bucket):
                raise ValueError("s3://bucket/prefix needs a valid bucket name")
            return value.rstrip("/")
        raise ValueError("must be a folder path, a file:// URL or s3://bucket/prefix")

    @field_validator("redis_url")
    @classmethod
    def _redis_url_supported(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("signing_key")
    @classmethod
    def _signing_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _durations_consistent(self) -> Settings:
        if self.min_duration_seconds >= self.max_duration_seconds:
            raise ValueError("min_duration_seconds must be below max_duration_seconds")
        if self.stream_flush_seconds >= self.stream_reconnect_seconds:
            # A live connection must write a part before its call looks abandoned.
            raise ValueError("stream_flush_seconds must be below stream_reconnect_seconds")
        return self

    # Derived values ---------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'voicemail.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def is_s3(self) -> bool:
        return bool(self.storage_url and self.storage_url.startswith("s3://"))

    @property
    def s3_location(self) -> tuple[str, str]:
        """(bucket, key prefix without slashes at its ends) of an ``s3://`` storage URL."""
        if not self.storage_url or not self.is_s3:
            raise ValueError("storage_url is not an s3:// URL")
        bucket, _, prefix = self.storage_url.removeprefix("s3://").partition("/")
        return bucket, prefix.strip("/")

    @property
    def recordings_dir(self) -> Path:
        if self.storage_url and not self.is_s3:
            return Path(self.storage_url.removeprefix("file://"))
        return self.data_dir / "recordings"

    @property
    def scratch_dir(self) -> Path:
        """Uploads being decoded; never served, swept of leftovers at start."""
        return self.data_dir / "tmp"

    @property
    def runs_embedded_worker(self) -> bool:
        return self.is_sqlite if self.embedded_worker is None else self.embedded_worker

    def master_key(self) -> bytes:
        """The signing key: given, or generated once and kept in ``data_dir``."""
        if self.signing_key is not None:
            return self.signing_key.get_secret_value().encode()
        path = self.data_dir / SIGNING_KEY_FILE
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # O_EXCL: if two processes start at once, one creates and the other reads.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        key = path.read_text().strip()
        if len(key) < 32:
            raise ValueError(f"{SIGNING_KEY_FILE} in the data folder is too short or empty")
        return key.encode()
