"""A real SMTP server for the e-mail tests: aiosmtpd in a thread on a free port, with a
self-signed certificate (made here with ``cryptography``) for STARTTLS or TLS from the
start, and a login it checks.

It answers DATA from a script of replies (``"451 4.3.0 Try again later"``, ``"554 …"``)
and then accepts; every message it accepts or refuses is recorded with its envelope and
the parsed message. ``ca_file`` is the certificate to trust (``VOICEMAIL_SMTP_CA_FILE``).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import logging
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers.net import free_port

ACCEPT = "250 OK"
# The login the server wants unless told otherwise (reserved URL characters in it, so a
# client that does not percent-decode the URL fails).
USERNAME = "voicemail"
PASSWORD = "s3cret:p@ss/word"


@dataclass(frozen=True)
class Mail:
    """One message the server received."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    answered: str
    tls: bool  # whether it came over TLS (STARTTLS or TLS from the start)
    login: str | None  # the user name it logged in with

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def accepted(self) -> bool:
        return self.answered.startswith("2")


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) PEM files for ``host`` (an IP address or a name), valid a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class SmtpServer:
    """What a test sees of the running server."""

    port: int
    ca_file: Path
    username: str | None
    password: str | None
    implicit_tls: bool
    script: list[str] = field(default_factory=list)
    received: list[Mail] = field(default_factory=list)
    failed_logins: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def url(self, **params: str) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = ""
        if self.username:
            user = f"{quote(self.username, safe='')}:{quote(self.password or '', safe='')}@"
        query = "&".join(f"{key}={value}" for key, value in params.items())
        return f"{scheme}://{user}127.0.0.1:{self.port}" + (f"?{query}" if query else "")

    @property
    def accepted(self) -> list[Mail]:
        with self.arrived:
            return [mail for mail in self.received if mail.accepted]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Mail]:
        """The first ``count`` accepted messages, once they are there."""
        with self.arrived:
            ok = self.arrived.wait_for(
                lambda: len([m for m in self.received if m.accepted]) >= count, timeout
            )
            assert ok, f"{count} messages did not arrive: {self.received}"
            return [mail for mail in self.received if mail.accepted][:count]


class _Handler:
    def __init__(self, state: SmtpServer) -> None:
        self.state = state

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        state = self.state
        with state.arrived:
            answer = state.script.pop(0) if state.script else ACCEPT
            login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
            state.received.append(
                Mail(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or envelope.content),
                    answered=answer,
                    tls=session.ssl is not None,
                    login=login,
                )
            )
            state.arrived.notify_all()
        return answer


def _authenticator(state: SmtpServer) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == state.username
            and data.password.decode() == state.password
        )
        if not ok:
            state.failed_logins += 1
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=data.login)

    return check


@contextmanager
def running_smtp_server(
    folder: Path,
    *,
    script: Sequence[str] = (),
    username: str | None = USERNAME,
    password: str | None = PASSWORD,
    implicit_tls: bool = False,
    offer_starttls: bool = True,
) -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1 for the ``with`` block. By default it requires STARTTLS
    before anything else and a login (``username``/``password``: None, no login); with
    ``implicit_tls`` it speaks TLS from the first byte (smtps); ``offer_starttls=False``
    offers no TLS at all."""
    cert, key = self_signed_certificate(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    state = SmtpServer(
        port=free_port(),
        ca_file=cert,
        username=username,
        password=password,
        implicit_tls=implicit_tls,
        script=list(script),
    )
    options: dict[str, Any] = {}
    if username is not None:
        # (aiosmtpd offers no AUTH on a TLS-from-the-start connection if told to require
        # TLS for it: it only counts STARTTLS; such a connection is TLS anyway.)
        options.update(authenticator=_authenticator(state), auth_require_tls=not implicit_tls)
    if implicit_tls:
        options["ssl_context"] = context
    elif offer_starttls:
        options.update(tls_context=context, require_starttls=True)
    controller = Controller(
        _Handler(state),
        hostname="127.0.0.1",
        port=state.port,
        server_hostname="127.0.0.1",
        **options,
    )
    # aiosmtpd logs every session, and a deprecation of its own at each login: quiet here.
    server_log = logging.getLogger("mail.log")
    level = server_log.level
    server_log.setLevel(logging.CRITICAL)
    controller.start()
    try:
        yield state
    finally:
        controller.stop()
        server_log.setLevel(level)
