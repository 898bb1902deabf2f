"""Settings: one class, read from ``VOICEMAIL_*`` environment variables (and ``.env``).

Built once at start-up and passed down (``create_app(settings)``, ``Worker(settings)``);
nothing reads settings from a module global.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import string
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voicemail.private import private_dir

SIGNING_KEY_FILE = "signing.key"
# S3 bucket names: 3-63 lower-case letters, digits, dots and hyphens.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# host:port, IPv6 in brackets (``metrics.parse_listen`` splits it).
LISTEN_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``10.0.0.0/8, 127.0.0.1`` → networks; a bare address is a network of one. Raises
    ValueError naming the entry that is not a network. (Here, not with the webhook targets
    that use them: the setting is checked when settings load.)"""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network (CIDR): {entry!r}") from None
    return tuple(networks)


def parse_port_range(text: str) -> tuple[int, int]:
    """``20000-20999`` → (20000, 20999); ValueError when it is not a range of ports."""
    first, dash, last = text.strip().partition("-")
    if not dash or not first.isdigit() or not last.isdigit():
        raise ValueError(f"not a port range (first-last): {text!r}")
    if not 0 < int(first) <= int(last) < 65536:
        raise ValueError(f"not a port range (first-last): {text!r}")
    return int(first), int(last)


# An e-mail address as we accept it (recipients, the sender): local@domain, no spaces, no
# quotes or comments, a dotted domain; at most 254 characters (RFC 5321's path limit).
_ADDRESS_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_ADDRESS_LENGTH = 254
STARTTLS_MODES = ("auto", "required", "never")


# Click-to-call (inbox): the schemes a call URI template may use without being named in
# VOICEMAIL_INBOX_CALL_URI_SCHEMES, and those never allowed (they run code or show content).
CALL_URI_SCHEMES = ("tel", "sip", "sips", "callto", "https")
_UNSAFE_SCHEMES = frozenset(
    {"javascript", "vbscript", "data", "file", "blob", "about", "filesystem", "view-source"}
)
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")


def parse_call_schemes(text: str) -> tuple[str, ...]:
    """``VOICEMAIL_INBOX_CALL_URI_SCHEMES``: extra schemes (a CTI's own, such as
    ``mycti``), comma-separated; ValueError for a malformed or unsafe one."""
    schemes = []
    for part in text.split(","):
        scheme = part.strip().lower()
        if not scheme:
            continue
        if not _SCHEME_RE.match(scheme):
            raise ValueError(f"{scheme[:40]!r} is not a URI scheme")
        if scheme in _UNSAFE_SCHEMES:
            raise ValueError(f"the {scheme}: scheme is not allowed")
        schemes.append(scheme)
    return tuple(schemes)


def check_call_uri_template(template: str, extra_schemes: tuple[str, ...] = ()) -> str:
    """A click-to-call URI template: a safe scheme (tel, sip, sips, callto, https, or one of
    ``extra_schemes``), then text with ``{number}`` once, the only placeholder."""
    scheme, colon, _ = template.partition(":")
    if not colon or not _SCHEME_RE.match(scheme.lower()):
        raise ValueError("must start with a scheme such as tel: or sip:")
    allowed = (*CALL_URI_SCHEMES, *extra_schemes)
    if scheme.lower() not in allowed:
        raise ValueError(
            f"the {scheme.lower()}: scheme is not allowed (allowed: {', '.join(allowed)}; "
            "add a CTI scheme with VOICEMAIL_INBOX_CALL_URI_SCHEMES)"
        )
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"is not a template: {exc} (write {{{{ and }}}} for braces)") from None
    if fields != ["number"] or "{number}" not in template:
        raise ValueError("must contain {number} once, and no other placeholder")
    return template


def check_email_address(text: str) -> str:
    """``local@domain.tld`` as given (trimmed); ValueError otherwise."""
    address = text.strip()
    if len(address) > MAX_ADDRESS_LENGTH or not _ADDRESS_RE.fullmatch(address):
        raise ValueError(f"not an e-mail address (local@domain): {address[:80]!r}")
    return address


def parse_sender(text: str) -> tuple[str, str]:
    """``Name <local@domain>`` or ``local@domain`` → (display name, address)."""
    if any(ord(ch) < 32 for ch in text):
        raise ValueError("the sender must be one line")
    name, address = parseaddr(text.strip())
    if not address:
        raise ValueError("not an e-mail address (local@domain, or Name <local@domain>)")
    return name, check_email_address(address)


@dataclass(frozen=True)
class SmtpServer:
    """Where e-mail goes, from ``VOICEMAIL_SMTP_URL``: ``smtp://`` (STARTTLS when the server
    offers it, or as ``?starttls=required|never`` says) or ``smtps://`` (TLS from the start),
    ``user:password@`` when the server wants a login. The password is never in ``repr``."""

    host: str
    port: int
    implicit_tls: bool
    starttls: str  # one of STARTTLS_MODES; "never" with implicit_tls
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        """The URL without its password, for logs and errors."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp[s]://[user:password@]host[:port][?starttls=auto|required|never]``; ValueError
    (never quoting the URL, which may hold a password) when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValueError("not a valid smtp:// or smtps:// URL") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("must start with smtp:// or smtps://")
    if not host:
        raise ValueError("needs a host: smtp://host:port")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("takes no path: smtp://host:port?starttls=auto")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"starttls"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0][:40]!r}; only starttls")
    implicit = parts.scheme == "smtps"
    starttls = query.get("starttls", ["never" if implicit else "auto"])[-1]
    if starttls not in STARTTLS_MODES:
        raise ValueError(f"starttls must be one of {', '.join(STARTTLS_MODES)}")
    if implicit and starttls != "never":
        raise ValueError("smtps:// is TLS from the start: no starttls parameter")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise ValueError("a password needs a user name: smtp://user:password@host")
    return SmtpServer(
        host=host,
        port=port or (465 if implicit else 25),
        implicit_tls=implicit,
        starttls=starttls,
        username=username,
        password=password,
    )


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value (an SMTP URL with its password, a key) is never
    # repeated in the error that names it.
    model_config = SettingsConfigDict(
        env_prefix="VOICEMAIL_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
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

    # Decoding uploaded recordings (stored as mono 16-bit WAV at the source's rate, at most
    # 16 kHz). An upload's cost is what it decodes to, which a small file can inflate.
    decode_min_sample_rate: int = Field(
        default=8_000,
        ge=1,
        description="Uploads at a lower sample rate are refused (400): telephone audio is "
        "8 kHz; far lower rates make a few samples pass for seconds of voicemail",
    )
    decode_max_sample_rate: int = Field(
        default=192_000,
        ge=1,
        description="Uploads at a higher sample rate are refused (400): decoding cost grows "
        "with the rate, and nothing above 16 kHz is kept",
    )
    decode_max_channels: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Uploads with more channels are refused (400); all are mixed to mono",
    )
    decode_cpu_seconds: float = Field(
        default=10.0,
        gt=0,
        description="CPU time one upload's decode may use; past it the upload is refused "
        "(413). 590 s of 8-channel 192 kHz FLAC, the costliest within the other limits, "
        "took 3 s of one core in bench/decode_load.py; a phone message takes milliseconds",
    )
    decode_concurrency: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Uploads one API process decodes at once (each on one core); the rest "
        "wait for a turn, so a burst of uploads cannot starve the other requests of CPU",
    )
    decode_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long an upload waits for a decoding turn before it is answered "
        "503 with Retry-After (the gateway sends it again later)",
    )
    decode_max_waiting: int = Field(
        default=32,
        ge=0,
        le=10_000,
        description="Uploads one API process lets wait for a decoding turn; past that an "
        "upload is answered 503 with Retry-After at once (each waiting upload holds a "
        "connection and its received file)",
    )

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
    # Live deposit: bounds on what one connection may cost (issue 9)
    stream_max_speed: float = Field(
        default=3.0,
        ge=1.0,
        le=100.0,
        description="Live audio is read no faster than this multiple of real time (after "
        "stream_burst_seconds): a gateway sending faster is slowed by TCP back-pressure (we "
        "stop reading its socket), then closed (see stream_throttle_seconds). Higher lets a "
        "replaying gateway finish sooner at the cost of more audio buffered per connection",
    )
    stream_burst_seconds: float = Field(
        default=5.0,
        ge=0.5,  # below a message or two, a gateway at exactly real time would be closed
        le=600,
        description="Seconds of audio a live connection may send at once above that pace "
        "(a gateway catching up after a network stall)",
    )
    stream_throttle_seconds: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="A live connection held back by that pace for this long without a "
        "break (every message already waiting) is closed with 1008: a gateway streaming "
        "faster than real time, not one catching up after a stall. Keep it well below "
        "uvicorn's 20 s WebSocket keepalive timeout: a held-back gateway's answers to our "
        "pings wait behind its audio",
    )
    stream_idle_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="A live socket that sends nothing at all (no audio, no text) for this "
        "long is closed (1000) and its call stored; default max_duration_seconds, so that "
        "no pause shorter than the longest message cuts a call short. While the socket is "
        "open, a call is never finalized as abandoned, however long the caller pauses",
    )
    stream_max_message_bytes: int = Field(
        default=1024 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="The largest WebSocket message `voicemail serve` accepts (a larger one "
        "closes the socket with 1009); a message is held whole in memory. Gateways send "
        "tens of milliseconds of audio per message, a few KB; 1 MiB is 4 s at 64 kHz stereo",
    )
    jambonz_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="The largest request the jambonz application and call-status webhooks "
        "read (a larger one is answered 413). jambonz posts the call's attributes and its "
        "SIP INVITE, a few KB",
    )
    jambonz_greeting_url_ttl_seconds: int = Field(
        default=600,
        ge=30,
        le=24 * 3600,
        description="How long the greeting URL in the jambonz calling webhook's `play` verb "
        "stays valid (jambonz fetches it as the call is answered)",
    )
    live_transcription_threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Threads an API process uses to transcribe its live calls, all calls "
        "together (a call holds one only while its audio is looked at or transcribed; "
        "idle sockets hold none)",
    )
    live_transcription_max_backlog_seconds: float = Field(
        default=60.0,
        ge=30.0,
        le=600.0,
        description="Audio a live call may have waiting for live transcription (memory: "
        "32 KB a second). Past it the call stops transcribing live and a job transcribes "
        "the recording after hang-up (the model cannot keep up with the calls)",
    )

    # Speech recognition
    asr_model: Path | None = Field(
        default=None, description="A CTranslate2 Whisper folder; default: the packaged base model"
    )
    asr_device: Literal["cpu", "cuda", "auto"] = "cpu"
    asr_compute_type: str = "int8"
    asr_threads: int = Field(
        default=0,
        ge=0,
        description="0 means one per CPU this process may use: its affinity mask and its "
        "container's CPU quota (cgroup), not the host's core count",
    )
    asr_beam_size: int = Field(
        default=5,
        ge=1,
        le=10,
        description="Beam search width. 1 (greedy decoding) takes about 10% less CPU per "
        "transcription than the default 5; see docs/benchmarks.md for their word error rates",
    )
    model_cache_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "voicemail"
        )
    )

    # Jobs
    job_lease_seconds: int = Field(default=300, ge=5)
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    job_timeout_seconds: float = Field(
        default=900.0,
        ge=1,
        description="The longest one attempt of a job may run. Past it the attempt counts as "
        "failed (retried up to job_max_attempts) and its hung thread is abandoned. Keep it "
        "well above the longest transcription: max_duration_seconds at the model's real-time "
        "factor on this hardware (about 0.23 on 2 CPU cores with beam 5: a 600 s message in about "
        "140 s)",
    )
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
    # Retention of the logs about voicemails (pruned by the workers every
    # purge_interval_seconds, and by `voicemail purge`).
    webhook_delivery_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Webhook deliveries (their event bodies and attempt logs) are deleted this "
        "many days after their event, once no longer pending. Longer keeps more history for "
        "redelivery and debugging; bodies of deleted voicemails are redacted at once anyway",
    )
    audit_retention_days: int = Field(
        default=365,
        ge=1,
        le=3650,
        description="Audit entries are deleted this many days after they were written. "
        'Longer answers "who read this" further back; entries hold ids, never voicemail '
        "content",
    )
    log_prune_batch_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Webhook deliveries or audit entries deleted per transaction when pruning "
        "(keeps each one short)",
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
        default=10.0,
        gt=0,
        le=60,
        description="Connect/read timeout of one delivery attempt; the whole attempt ends "
        "after twice this",
    )
    webhook_disable_after_hours: float = Field(
        default=24.0,
        ge=0,
        description="A subscription whose attempts have all failed for this long is disabled "
        "(a webhook.disabled event and a log line; `voicemail webhooks enable` sends again); "
        "0 never disables",
    )
    webhook_poll_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How often workers look for deliveries due"
    )
    # Webhook targets and fairness (issue 9: no port scanning through the delivery log; a
    # hanging receiver delays nobody else).
    webhook_allowed_networks: str = Field(
        default="",
        description="Comma-separated networks (CIDR, or single addresses) webhooks may reach "
        "although they are not public: loopback, private, link-local, CGNAT, metadata "
        "addresses are refused otherwise. For receivers on premises, e.g. 10.20.0.0/16; "
        "every address allowed here is one a webhook subscriber can make the workers POST "
        "to, so name as little as the receivers need",
    )
    webhook_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Deliveries one worker process posts at once (one thread each)",
    )
    webhook_subscription_concurrency: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Deliveries of one subscription in flight at once, across all workers: "
        "a receiver that hangs holds at most this many senders; more lets a slow but "
        "working receiver catch up faster",
    )
    webhook_account_concurrency: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Deliveries of one account's subscriptions in flight at once, across "
        "all workers: an account with many hanging receivers cannot take every sender",
    )

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _allowed_networks_parse(cls, value: str) -> str:
        return ",".join(str(network) for network in parse_networks(value))

    # E-mail notifications of new voicemails (issue 12): `voicemail email add`
    smtp_url: SecretStr | None = Field(
        default=None,
        description="The SMTP server notifications go through: smtp://host:587 (STARTTLS "
        "when the server offers it; ?starttls=required refuses to send without it, "
        "?starttls=never never starts it), or smtps://host:465 (TLS from the start), with "
        "user:password@ when the server wants a login (percent-encode reserved characters). "
        "A password is only sent over TLS (unless starttls=never), and never logged. Unset: "
        "no e-mail is sent (deliveries fail, visible in `voicemail email deliveries`)",
    )
    smtp_from: str = Field(
        default="voicemail@localhost.localdomain",
        description="The From of notifications: address, or Name <address>",
    )
    smtp_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="Timeout of each network operation of one SMTP attempt (connect, each "
        "command, the message)",
    )
    smtp_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the certificate authorities trusted for the SMTP server's "
        "TLS certificate (a relay with a private CA); default: the system's",
    )
    email_transcript_wait_seconds: float = Field(
        default=300.0,
        ge=0,
        le=24 * 3600,
        description="A notification is sent once the voicemail's transcript is there (or its "
        "transcription has failed), or after this many seconds without it: the message then "
        "says the transcript is still being made",
    )
    email_max_attachment_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=0,
        le=100 * 1024 * 1024,
        description="Recordings larger than this are not attached (the message links to the "
        "inbox instead); many mail servers refuse messages over 10-25 MB. 0: never attach",
    )
    email_retry_base_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Delay after a notification's first failed attempt; it doubles after each "
        "further failure (with jitter), up to email_retry_max_seconds",
    )
    email_retry_max_seconds: float = Field(
        default=3600.0, ge=0, description="The longest wait between two attempts"
    )
    email_retry_window_seconds: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="Retries stop (the delivery is marked failed) once the next attempt would "
        "fall this long after the voicemail",
    )
    email_poll_seconds: float = Field(
        default=5.0, gt=0, le=300, description="How often workers look for e-mails due"
    )
    email_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="E-mails one worker process sends at once (one SMTP connection each)",
    )
    email_delivery_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="E-mail deliveries and their attempt logs are deleted this many days after "
        "their voicemail, once no longer pending; a deleted voicemail's are redacted at once",
    )

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_smtp_url(value.get_secret_value())
        return value

    @field_validator("smtp_from")
    @classmethod
    def _smtp_from_is_an_address(cls, value: str) -> str:
        parse_sender(value)
        return value.strip()

    # The SIP endpoint (issue 11, ../shared/design/sip.md)
    sip_listen: str | None = Field(
        default=None,
        pattern=LISTEN_PATTERN,
        description="host:port the SIP endpoint listens on, UDP and TCP. Unset: `voicemail "
        "serve` runs no SIP endpoint (`voicemail sip` then listens on 0.0.0.0:5060)",
    )
    sip_public_address: str | None = Field(
        default=None,
        description="The address written in Contact and SDP (behind NAT); default: the "
        "listen address",
    )
    sip_rtp_ports: str = Field(
        default="20000-20999",
        description="The UDP ports of the calls' audio (RTP), first-last, both included",
    )
    sip_silence_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A SIP call is ended (its message kept) after this long without speech, "
        "once the caller spoke",
    )
    sip_rtp_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="A SIP call whose caller sends no audio (RTP) for this long is ended, its "
        "message kept (a dead caller leg; not while the caller holds the call)",
    )
    sip_allowed_networks: str = Field(
        default="127.0.0.0/8,::1",
        description="CIDRs of the PBXs and SBCs that may call; other sources get 403",
    )
    # The pjsua2-python wheel's PJSIP holds at most 4 calls per process and answers a fifth
    # 486 itself (measured: uaConfig.maxCalls above 4 changes nothing). One slot stays free,
    # so that the call over our limit gets our 503 with Retry-After, which a load balancer
    # (Kamailio's dispatcher) takes to the next process. More calls: more processes.
    sip_max_calls: int = Field(
        default=3,
        ge=1,
        le=3,
        description="Calls one SIP process takes at once (at most 3: PJSIP's 4 calls less "
        "one to refuse with); beyond, 503 with Retry-After",
    )
    sip_auth: bool = Field(
        default=False,
        description="SIP digest authentication: every call must authenticate as an app "
        "(client id and secret) holding the Voicemail Deposit scope on the called bot; "
        "others get 401, then 403",
    )
    sip_refusals_per_minute: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="Refused SIP requests (401, 403, 404, 503) logged and audited per source "
        "address and minute; the rest are counted in one line when the minute ends",
    )

    @field_validator("sip_rtp_ports")
    @classmethod
    def _sip_rtp_ports_parse(cls, value: str) -> str:
        first, last = parse_port_range(value)
        return f"{first}-{last}"

    @field_validator("sip_allowed_networks")
    @classmethod
    def _sip_allowed_networks_parse(cls, value: str) -> str:
        return ",".join(str(network) for network in parse_networks(value))

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
    backlog_refresh_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="How often an open backlog page (/inbox/supervisor) refreshes its figures",
    )
    # New voicemails pushed to open inbox pages (server-sent events, /inbox/notify/events):
    # each open tab holds one connection to one API process; each process looks at the
    # database for changes, so any number of processes serve them.
    inbox_events_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="How often each API process looks in the database for changed "
        "voicemails to push to its open inbox tabs (one small indexed query, whatever the "
        "number of tabs)",
    )
    inbox_events_max_connections: int = Field(
        default=500,
        ge=0,
        le=100_000,
        description="Inbox event streams one API process holds at once (one per open tab); "
        "past it a tab is answered 503 and polls instead. 0 turns the streams off",
    )
    inbox_events_per_user: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Inbox event streams one user may hold on one API process; past it 429 "
        "(that tab polls instead)",
    )
    inbox_events_max_seconds: float = Field(
        default=300.0,
        ge=5,
        le=24 * 3600,
        description="An event stream is ended after this long and the browser reconnects "
        "(to any process): the sign-in and the user's queues are looked at again",
    )
    inbox_call_uri_template: str = Field(
        default="tel:{number}",
        max_length=500,
        description="The link of a caller's number in the inbox: {number} is the number in "
        "E.164 where it can be read as one, URL-encoded; e.g. sip:{number}@pbx.example.com "
        "or https://cti.example.com/dial?n={number}",
    )
    inbox_call_uri_schemes: str = Field(
        default="",
        max_length=500,
        description="Schemes the call URI template may use besides tel, sip, sips, callto "
        "and https (a CTI's own, such as mycti), comma-separated; never javascript, data, "
        "file...",
    )

    @field_validator("inbox_call_uri_schemes")
    @classmethod
    def _inbox_call_uri_schemes_parse(cls, value: str) -> str:
        return ",".join(parse_call_schemes(value))

    alert_check_seconds: int = Field(
        default=60, ge=1, description="How often workers compare queue backlogs with alerts"
    )

    # Sign-in throttling (inbox). Only failed sign-ins count, in a moving window, shared
    # through Redis when VOICEMAIL_REDIS_URL is set. A refused attempt is answered 429 with
    # Retry-After before its password is checked. Three limits, so that guessing is bounded
    # and an attacker still cannot cheaply lock a real user out: one source address trying
    # one account is stopped early, while the account as a whole is refused only when many
    # addresses fail on it.
    login_failure_window_seconds: int = Field(
        default=900,
        ge=1,
        le=24 * 3600,
        description="The window failed sign-ins are counted in; a throttle ends at the latest "
        "this long after the failures that caused it (it never locks for good)",
    )
    login_failures_per_account_and_address: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins on one account from one source address per window. Only "
        "that address is refused; the user signs in from elsewhere",
    )
    login_failures_per_account: int = Field(
        default=50,
        ge=1,
        description="Failed sign-ins on one account from all addresses per window: bounds "
        "guessing spread over many addresses. Lower is safer against guessing but lets fewer "
        "attacking addresses lock the user out for the window",
    )
    login_failures_per_address: int = Field(
        default=30,
        ge=1,
        description="Failed sign-ins from one source address, on any accounts, per window "
        "(password spraying). Several users behind one NAT share it",
    )

    # Who may read /metrics. Default (neither set): the API port answers /metrics to
    # loopback clients only (a Prometheus on the same host), 403 to anyone else.
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, /metrics (on the API port, the metrics listen address and "
        "`worker --metrics-port`) requires `Authorization: Bearer <token>` from every client, "
        "loopback included; compared in constant time, never logged",
    )
    metrics_listen: str | None = Field(
        default=None,
        pattern=LISTEN_PATTERN,
        description="host:port (IPv6 in brackets) on which each API process serves /metrics "
        "alone, e.g. a private interface; the API port then answers 404 for /metrics. One "
        "address per process: give each process on a host its own port",
    )

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # A validator, not min_length: pydantic's own error would print the token.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

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
        if self.decode_min_sample_rate > self.decode_max_sample_rate:
            raise ValueError("decode_min_sample_rate must not be above decode_max_sample_rate")
        if self.stream_flush_seconds >= self.stream_reconnect_seconds:
            # A live connection must write a part before its call looks abandoned.
            raise ValueError("stream_flush_seconds must be below stream_reconnect_seconds")
        return self

    @model_validator(mode="after")
    def _call_uri_template_safe(self) -> Settings:
        # After the schemes' own check: the template may use the schemes named there.
        try:
            check_call_uri_template(
                self.inbox_call_uri_template, parse_call_schemes(self.inbox_call_uri_schemes)
            )
        except ValueError as exc:
            raise ValueError(f"VOICEMAIL_INBOX_CALL_URI_TEMPLATE {exc}") from None
        return self

    # Derived values ---------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'voicemail.db').resolve()}"

    @property
    def resolved_stream_idle_timeout(self) -> float:
        """Seconds a live socket may send nothing before it is closed."""
        return self.stream_idle_timeout_seconds or self.max_duration_seconds

    @property
    def smtp_server(self) -> SmtpServer | None:
        """``smtp_url`` parsed (checked when settings load); None when not set."""
        if self.smtp_url is None:
            return None
        return parse_smtp_url(self.smtp_url.get_secret_value())

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
            private_dir(self.data_dir)
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
