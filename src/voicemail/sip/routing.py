"""Where a SIP call goes and who is calling: the mailbox its INVITE names (or the number
that forwarded it), the caller's number, its sessionId, and, with ``VOICEMAIL_SIP_AUTH``,
whether the sender proved to be an app allowed to deposit on that bot (SIP digest with the
app's client id and secret).

``Router.route`` answers one INVITE with a ``Route`` (answer it) or a ``Refusal``. It reads
the database through the services (``bots``, ``auth``); the digest is ``auth.digest``'s.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from voicemail import ids
from voicemail.auth import digest
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.live import calls
from voicemail.runtime import Runtime
from voicemail.security import derive_key
from voicemail.sip.requests import SipRequest, source_host, uri_user

log = logging.getLogger(__name__)

REALM = "voicemail"
RETRY_AFTER_SECONDS = 5
# How many forwarding entries (Diversion, History-Info) are looked at: a PBX's chain of
# forwards is a few; a longer list is cut here.
MAX_FORWARDS = 10
# A list's entries: commas outside <…> and quotes.
_ENTRY_RE = re.compile(r'(?:[^,<"]|<[^>]*>|"(?:[^"\\]|\\.)*")+')
_HISTORY_INDEX_RE = re.compile(r";\s*index\s*=\s*([0-9.]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    """An INVITE to answer: the bot, and the call's data."""

    bot_id: str
    to: str  # the mailbox (or bot id) called, or the number that forwarded the call
    caller: str | None  # P-Asserted-Identity's number, else From's
    session_id: str
    call_sid: str  # the Call-ID, cut to what a call sid holds
    app_id: str | None = None  # the app that authenticated, with VOICEMAIL_SIP_AUTH

    def metadata(self, sample_rate: int) -> calls.CallMetadata:
        return calls.CallMetadata(
            call_sid=self.call_sid,
            session_id=self.session_id,
            caller_from=self.caller,
            caller_to=self.to,
            sample_rate=sample_rate,
            mix_type="mono",
            language=None,
        )


@dataclass(frozen=True)
class Refusal:
    """An INVITE to refuse: the status, why (a bounded word, for the log and the audit),
    and the response's extra headers."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def challenge(self) -> bool:
        return self.status == 401


def retry_later(reason: str) -> Refusal:
    """A 503 the caller (or Kamailio) may retry elsewhere or later: ``busy``, ``unavailable``."""
    return Refusal(503, reason, [("Retry-After", str(RETRY_AFTER_SECONDS))])


def session_id_of(request: SipRequest) -> str:
    """``X-Session-Id`` when it is a sessionId the rest of the service accepts, else a new
    one. The design allows ``[A-Za-z0-9_-]{1,64}``, but every other path (deposit, fetch,
    list, delete, the live stream) takes 24 hex digits only, so a message filed under any
    other id could never be fetched; such a header is logged and replaced."""
    value = (request.header("x-session-id") or "").strip()
    if value:
        normalized = ids.normalize_session_id(value)
        if normalized is not None:
            return normalized
        log.info(
            "SIP X-Session-Id is not a 24-hex sessionId; the call gets a new one",
            extra={"x_session_id": value[:64]},
        )
    return ids.new_session_id()


def caller_of(request: SipRequest) -> str | None:
    """``P-Asserted-Identity``'s number (a trusted PBX sets it), else ``From``'s."""
    for name in ("p-asserted-identity", "from"):
        for value in request.headers.get(name, [])[:MAX_FORWARDS]:
            for entry in entries(value):
                user = uri_user(entry)
                if user:
                    return ids.clean_caller_id(unquote(user))
    return None


def entries(value: str) -> list[str]:
    """The comma-separated entries of a header value (name-addrs)."""
    return [entry.strip() for entry in _ENTRY_RE.findall(value) if entry.strip()]


def forwarding_numbers(request: SipRequest) -> list[str]:
    """The numbers that forwarded the call, most recent first: ``Diversion`` (RFC 5806: the
    topmost entry is the last diversion), then ``History-Info`` (RFC 7044: entries in the
    order of retargeting, ours last, so read backwards)."""
    numbers: list[str] = []
    for value in request.headers.get("diversion", []):
        numbers.extend(_users(entries(value)))
    history = [
        entry for value in request.headers.get("history-info", []) for entry in entries(value)
    ]
    history.sort(key=_history_index)
    numbers.extend(reversed(_users(history)))
    return list(dict.fromkeys(numbers))[:MAX_FORWARDS]


def _users(values: list[str]) -> list[str]:
    return [unquote(user) for entry in values if (user := uri_user(entry))]


def _history_index(entry: str) -> tuple[int, ...]:
    match = _HISTORY_INDEX_RE.search(entry)
    if match is None:
        return ()
    return tuple(int(part) for part in match.group(1).split(".") if part.isdigit())


class Router:
    """Routes the INVITEs of one SIP endpoint (on its SIP thread)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.auth = runtime.settings.sip_auth
        self._nonce_key = derive_key(runtime.settings.master_key(), "sip-digest-nonces")

    def route(self, source: str, request: SipRequest) -> Route | Refusal:
        """Where the INVITE from ``source`` goes, or why not (never raises)."""
        try:
            return self._route(source, request)
        except Exception:
            log.exception("SIP call refused: the database is unavailable")
            return retry_later("unavailable")

    def _route(self, source: str, request: SipRequest) -> Route | Refusal:
        app_id: str | None = None
        account_id: str | None = None
        if self.auth:
            checked = self._authenticate(source, request)
            if isinstance(checked, Refusal):
                return checked
            app_id, account_id = checked
        found = self._mailbox(request, account_id)
        if found is None:
            return Refusal(404, "unknown_mailbox")
        bot_id, to = found
        if app_id is not None:
            with self.runtime.read_sessions() as session:
                allowed = auth.holds_scope(
                    session, app_id=app_id, bot_id=bot_id, scope=auth.SCOPE_DEPOSIT
                )
            if not allowed:
                return Refusal(403, "no_deposit_scope")
        call_id = request.header("call-id") or ids.new_session_id()
        return Route(
            bot_id=bot_id,
            to=to,
            caller=caller_of(request),
            session_id=session_id_of(request),
            call_sid=call_id[: calls.CALL_SID_MAX],
            app_id=app_id,
        )

    def _mailbox(self, request: SipRequest, account_id: str | None) -> tuple[str, str] | None:
        """The bot and the number it was reached by: the Request-URI's user part, else the
        numbers that forwarded the call. A mailbox held in several accounts (with no
        authenticated app to say which) reaches none."""
        called = request.mailbox
        candidates = ([unquote(called)] if called else []) + forwarding_numbers(request)
        with self.runtime.read_sessions() as session:
            for number in candidates:
                found = bots.bots_for_mailbox(session, number, account_id=account_id)
                if len(found) == 1:
                    return found[0], number[: ids.CALLER_ID_MAX]
                if len(found) > 1:
                    log.warning(
                        "SIP mailbox held in several accounts: not routed without "
                        "authentication (VOICEMAIL_SIP_AUTH)",
                        extra={"mailbox": number[:64]},
                    )
        return None

    def _authenticate(self, source: str, request: SipRequest) -> tuple[str, str] | Refusal:
        """The app (and its account) whose digest credentials the INVITE carries; a 401
        challenge when it carries none (or a stale nonce), 403 when they are wrong."""
        host = source_host(source)
        credentials = digest.parse_authorization(request.header("authorization"))
        if credentials is None:
            return self._challenge(host, stale=False)
        nonce = digest.check_nonce(self._nonce_key, credentials.nonce, host)
        if nonce is digest.NonceCheck.STALE:
            return self._challenge(host, stale=True)
        if nonce is digest.NonceCheck.BAD or credentials.realm != REALM:
            return self._challenge(host, stale=False)
        if credentials.uri != request.uri and uri_user(f"{credentials.uri}>") is not None:
            # Digested for another mailbox. (A URI of no user, only our host, is taken: sipp
            # sends its remote address there, not the Request-URI.)
            return Refusal(403, "bad_credentials")

        def verify(secret: str) -> bool:
            return digest.response_matches(credentials, password=secret, method=request.method)

        with self.runtime.read_sessions() as session:
            app = auth.digest_app(
                session, box=self.runtime.box, client_id=credentials.username, verify=verify
            )
            if app is None:
                return Refusal(403, "bad_credentials")
            return app.id, app.account_id

    def _challenge(self, host: str, *, stale: bool) -> Refusal:
        nonce = digest.new_nonce(self._nonce_key, host)
        value = digest.challenge(REALM, nonce, stale=stale)
        return Refusal(401, "challenge", [("WWW-Authenticate", value)])
