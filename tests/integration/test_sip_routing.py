"""Who a SIP call reaches and who it says is calling (issue 11: mailboxes, forwarded calls,
caller identity, sessionId, digest authentication, metrics, audit, readiness).

The mailboxes are set with the real CLI on both databases; the calls are made by Debian's
``sipp`` playing the scenarios of ``tests/sip/`` against ``voicemail serve`` and
``voicemail sip`` processes, and what a call left is read through the Kore fetch API.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.cli import invoke_cli, ok_json, one_line_error
from tests.helpers.net import free_port, free_udp_port
from tests.helpers.processes import VOICEMAIL, embedded_service
from tests.helpers.sip import PROMPT_SECONDS, SCENARIOS, Sip, refused, sipp_call
from tests.helpers.waiting import wait_until
from tests.services import unavailable
from voicemail.audit import service as audit
from voicemail.auth import digest
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.errors import Conflict
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.sip import routing
from voicemail.sip.observe import RefusalLimiter
from voicemail.sip.requests import parse_request
from voicemail.transcription import FakeTranscriber

# Mailboxes ---------------------------------------------------------------------------------


def test_mailboxes_are_given_with_the_cli_and_cleared(settings: Settings, runtime: Runtime) -> None:
    bot = ok_json(invoke_cli(settings, "bots", "create", "Sales", "--json"))["botId"]
    configured = ok_json(
        invoke_cli(
            settings, "bots", "configure", bot, "--mailbox", "1001", "--mailbox", "Support",
            "--mailbox", "+15551230000", "--json",
        )
    )  # fmt: skip
    assert configured["mailboxes"] == ["1001", "support", "+15551230000"]
    # Again, with one more: what it has stays, once.
    again = ok_json(invoke_cli(settings, "bots", "configure", bot, "--mailbox", "1001",
                               "--mailbox", "1002", "--json"))  # fmt: skip
    assert again["mailboxes"] == ["1001", "support", "+15551230000", "1002"]
    with runtime.sessions() as session:
        assert bots.bots_for_mailbox(session, "SUPPORT") == [bot]
        assert bots.bots_for_mailbox(session, bot) == [bot]
        assert bots.bots_for_mailbox(session, "1003") == []
    replaced = ok_json(invoke_cli(settings, "bots", "configure", bot, "--clear-mailboxes",
                                  "--mailbox", "2001", "--json"))  # fmt: skip
    assert replaced["mailboxes"] == ["2001"]
    cleared = ok_json(invoke_cli(settings, "bots", "configure", bot, "--clear-mailboxes", "--json"))
    assert cleared["mailboxes"] == []
    listed = ok_json(invoke_cli(settings, "bots", "list", "--json"))
    assert listed["bots"][0]["mailboxes"] == []


def test_a_mailbox_of_another_bot_or_a_bad_one_is_a_clear_error(settings: Settings) -> None:
    first = ok_json(invoke_cli(settings, "bots", "create", "First", "--json"))["botId"]
    second = ok_json(invoke_cli(settings, "bots", "create", "Second", "--json"))["botId"]
    ok_json(invoke_cli(settings, "bots", "configure", first, "--mailbox", "1001", "--json"))
    taken = one_line_error(invoke_cli(settings, "bots", "configure", second, "--mailbox", "1001"))
    assert f"Mailbox 1001 already belongs to bot {first}" in taken
    for bad, says in (
        ("10 01", "Invalid mailbox"),
        ("x" * 65, "Invalid mailbox"),
        (second, "cannot be a bot id"),
    ):
        error = one_line_error(invoke_cli(settings, "bots", "configure", second, "--mailbox", bad))
        assert says in error
    # Nothing of a refused change was kept.
    listed = ok_json(invoke_cli(settings, "bots", "list", "--json"))["bots"]
    assert {b["botId"]: b["mailboxes"] for b in listed} == {first: ["1001"], second: []}


def test_two_bots_claiming_one_mailbox_at_once_one_gets_a_conflict(runtime: Runtime) -> None:
    """The second claim runs while the first is in its transaction, not yet committed: on
    PostgreSQL it passes the check, waits on the unique index and gets the constraint's
    answer, on SQLite it waits for the write lock and sees the first's row. Both: Conflict."""
    with runtime.sessions.begin() as session:
        first = bots.create_bot(session, name="First").id
        second = bots.create_bot(session, name="Second").id
    outcome: list[BaseException | None] = []

    def claim_second() -> None:
        try:
            with runtime.sessions.begin() as session:
                bots.set_mailboxes(session, bot_id=second, add=["1001"])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with runtime.sessions.begin() as session:
        bots.set_mailboxes(session, bot_id=first, add=["1001"])
        session.flush()
        racer = threading.Thread(target=claim_second)
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive()  # waiting for the first transaction
    racer.join(timeout=30)
    [error] = outcome
    assert isinstance(error, Conflict), error
    assert "Mailbox 1001 already belongs to" in error.message
    with runtime.sessions() as session:
        assert bots.bots_for_mailbox(session, "1001") == [first]


def test_a_mailbox_is_one_bot_per_account_but_may_repeat_across_accounts(
    runtime: Runtime, tmp_path: Path
) -> None:
    from voicemail.db.models import Account

    with runtime.sessions.begin() as session:
        session.add(Account(id="o-other", name="Other"))
        session.flush()
        ours = bots.create_bot(session, name="Ours").id
        theirs = bots.create_bot(session, name="Theirs", account_id="o-other").id
        bots.set_mailboxes(session, bot_id=ours, add=["1001"])
        bots.set_mailboxes(session, bot_id=theirs, add=["1001"])
    with runtime.sessions() as session:
        assert sorted(bots.bots_for_mailbox(session, "1001")) == sorted([ours, theirs])
        assert bots.bots_for_mailbox(session, "1001", account_id="o-other") == [theirs]


# Calls -------------------------------------------------------------------------------------

# Each message: the beep (0.5 s), then 2.5 s of the caller's audio, then BYE: well above the
# 1 s a message needs, even where a loaded machine's media clock runs late.
CALL_MS = round((PROMPT_SECONDS + 2.5) * 1000)  # the greeting and beep, then 2.5 s
# What sipp streams: G.711 µ-law silence (0xFF), headerless; no model is loaded here, so
# the messages are stored and not transcribed.
ULAW_SILENCE = b"\xff"


@dataclass
class Pbx:
    """``voicemail serve`` with a SIP endpoint (no authentication), two bots with their
    mailboxes, and a folder for sipp."""

    sip: Sip
    other_bot: str
    other_token: str
    admin: Runtime  # the test's own handle on the service's database (set-up and audit)

    def app(self, *scopes: str) -> tuple[str, str]:
        """A new app with ``scopes`` on the first bot: its client id and secret."""
        with self.admin.sessions.begin() as session:
            created = auth.create_app(
                session, box=self.admin.box, name="PBX", bot_id=self.sip.bot, scopes=scopes
            )
            return created.app.id, created.client_secret


def _env(**settings: str) -> dict[str, str]:
    return {
        "VOICEMAIL_EMBEDDED_WORKER": "false",  # no model: nothing here is transcribed
        "VOICEMAIL_LIVE_TRANSCRIPTION": "false",
        "VOICEMAIL_RATE_LIMIT_PER_MINUTE": "10000",
        "VOICEMAIL_LOG_FORMAT": "json",
        "VOICEMAIL_LOG_LEVEL": "INFO",
        "VOICEMAIL_AUDIT_FLUSH_SECONDS": "0.1",
        **settings,
    }


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pbx]:
    if shutil.which("sipp") is None:
        unavailable("sipp is not installed (Debian package sip-tester)")
    home = tmp_path_factory.mktemp("sip-routing")
    work = home / "sipp"
    work.mkdir()
    (work / "clip.ulaw").write_bytes(ULAW_SILENCE * 8000 * 5)
    address = f"127.0.0.1:{free_udp_port('127.0.0.1')}"
    rtp = free_udp_port("127.0.0.1")
    env = _env(
        VOICEMAIL_SIP_LISTEN=address,
        VOICEMAIL_SIP_RTP_PORTS=f"{rtp}-{rtp + 40}",
        # 127.0.0.2 is loopback too, but not allowed: the refused source of the tests.
        VOICEMAIL_SIP_ALLOWED_NETWORKS="127.0.0.1/32",
        VOICEMAIL_SIP_REFUSALS_PER_MINUTE=str(REFUSALS_PER_MINUTE),
    )
    with embedded_service(home, **env) as service:
        # Set up in this process on the service's own database (the CLI's mailbox options
        # have their tests above; a CLI process a step would take most of this module's time
        # on a busy machine).
        admin = Runtime.build(
            Settings(_env_file=None, data_dir=home / "voicemail-data"),  # type: ignore[call-arg]
            transcriber=FakeTranscriber(),
        )
        try:
            (bot, token), (other, other_token) = bot_and_token(admin), bot_and_token(admin)
            with admin.sessions.begin() as session:
                bots.set_mailboxes(session, bot_id=bot, add=["1001", "Support"])
                bots.set_mailboxes(session, bot_id=other, add=["+15557770000"])
            yield Pbx(Sip(service, address, bot, token, work), other, other_token, admin)
        finally:
            admin.close()


def bot_and_token(admin: Runtime) -> tuple[str, str]:
    """A bot, and a token of an app that may fetch and list its voicemails."""
    with admin.sessions.begin() as session:
        bot = bots.create_bot(session, name="Support line")
        created = auth.create_app(
            session, box=admin.box, name="CRM", bot_id=bot.id, scopes=[auth.SCOPE_FETCH]
        )
        token = jwt.encode({"appId": created.app.id}, created.client_secret, "HS256")
        return bot.id, token


REFUSALS_PER_MINUTE = 3


def routed(pbx: Pbx, name: str, headers: list[str]) -> Path:
    """``routed_call.xml`` with these header lines."""
    template = (SCENARIOS / "routed_call.xml").read_text()
    lines = "".join(f"      {header}\n" for header in headers)
    path = pbx.sip.work / f"{name}.xml"
    path.write_text(template.replace("      HEADERS\n", lines))
    return path


def call(pbx: Pbx, mailbox: str, session: str, *headers: str) -> None:
    """A message of CALL_MS left at ``mailbox`` with X-Session-Id ``session``."""
    scenario = routed(pbx, f"routed-{session}", list(headers))
    sipp_call(pbx.sip, scenario, mailbox, "-d", str(CALL_MS), "-key", "session_id", session)


def listed(pbx: Pbx, *, bot: str | None = None, token: str | None = None,
           **params: str) -> list[dict[str, Any]]:  # fmt: skip
    """The bot's stored voicemails through the list API (newest first)."""
    response = httpx.get(
        f"{pbx.sip.service.url}/api/public/bot/{bot or pbx.sip.bot}/voicemails",
        params=params,
        headers={"auth": token or pbx.sip.token},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["voicemails"]
    return items


def stored(pbx: Pbx, session: str, *, bot: str | None = None, token: str | None = None,
           **params: str) -> dict[str, Any]:  # fmt: skip
    """The voicemail of ``session`` once stored (the list shows stored ones only)."""

    def find() -> dict[str, Any] | None:
        found = [item for item in listed(pbx, bot=bot, token=token, **params)
                 if item["sessionId"] == session or session == "*"]  # fmt: skip
        return found[0] if found else None

    item: dict[str, Any] = wait_until(find, timeout=120, what=f"voicemail {session}", every=0.25)
    return item


@pytest.mark.no_sql
def test_a_call_to_a_mailbox_number_or_alias_reaches_its_bot(pbx: Pbx) -> None:
    call(pbx, "1001", "5e55100000000000000001a1")
    by_number = stored(pbx, "5e55100000000000000001a1")
    assert (by_number["to"], by_number["from"]) == ("1001", "+15551230000")
    assert 1.0 < by_number["durationSeconds"] <= 2.7

    call(pbx, "support", "5e55100000000000000001a2")
    assert stored(pbx, "5e55100000000000000001a2")["to"] == "support"


@pytest.mark.no_sql
def test_a_forwarded_call_is_matched_by_its_diversion_number(pbx: Pbx) -> None:
    """The PBX forwards to its voicemail pilot: the Request-URI names no mailbox, the
    Diversion header says which extension forwarded."""
    call(pbx, "voicemail", "5e55100000000000000002b1",
         "Diversion: <sip:1001@pbx.example.com>;reason=no-answer;counter=1")  # fmt: skip
    item = stored(pbx, "5e55100000000000000002b1")
    assert item["to"] == "1001"


@pytest.mark.no_sql
def test_a_forwarded_call_is_matched_by_its_history_info(pbx: Pbx) -> None:
    """History-Info lists the targets in order, ours last: the most recent one that is a
    mailbox wins (+15557770000 forwarded to 1001, which forwarded to us)."""
    call(pbx, "vm-pilot", "5e55100000000000000003c1",
         "History-Info: <sip:+15557770000@pbx.example.com>;index=1,"
         " <sip:1001@pbx.example.com?Reason=SIP%3Bcause%3D480>;index=1.1",
         "History-Info: <sip:vm-pilot@voicemail.example.com>;index=1.1.1")  # fmt: skip
    item = stored(pbx, "5e55100000000000000003c1")
    assert item["to"] == "1001"
    # The other bot's number forwarded first: a History-Info naming only it reaches it.
    call(
        pbx,
        "vm-pilot",
        "5e55100000000000000003c2",
        "History-Info: <tel:+15557770000>;index=1, <sip:vm-pilot@us.example.com>;index=1.1",
    )
    other = stored(pbx, "5e55100000000000000003c2", bot=pbx.other_bot, token=pbx.other_token)
    assert other["to"] == "+15557770000"


@pytest.mark.no_sql
def test_an_unknown_mailbox_or_forwarding_number_is_not_found(pbx: Pbx) -> None:
    sipp_call(pbx.sip, refused(404, pbx.sip.work), "9999")
    diverted = (
        refused(404, pbx.sip.work)
        .read_text()
        .replace(
            "Max-Forwards: 70\n      Content-Type",
            "Max-Forwards: 70\n      Diversion: <sip:2002@pbx.example.com>;reason=busy\n"
            "      Content-Type",
        )
    )
    path = pbx.sip.work / "refused-404-diverted.xml"
    path.write_text(diverted)
    assert "Diversion" in path.read_text()
    sipp_call(pbx.sip, path, "voicemail")


@pytest.mark.no_sql
def test_the_caller_is_p_asserted_identity_and_a_valid_x_session_id_is_kept(pbx: Pbx) -> None:
    identity = '"Jane Doe" <sip:+15559876543@pbx.example.com>, <tel:+15559876543>'
    call(pbx, "1001", "5E55100000000000000004D1", f"P-Asserted-Identity: {identity}")
    item = stored(pbx, "5e55100000000000000004d1")  # the caller's id, lower-cased
    assert item["from"] == "+15559876543"  # not From's +15551230000


@pytest.mark.no_sql
def test_an_x_session_id_other_than_24_hex_gets_a_new_session_id(pbx: Pbx) -> None:
    """The design allows [A-Za-z0-9_-]{1,64}, but sessionIds are 24 hex digits everywhere
    else (fetch, list, delete would refuse it): the call gets a new one."""
    call(pbx, "1001", "not-a-hex_session-id",
         "P-Asserted-Identity: <sip:+15550004444@pbx.example.com>")  # fmt: skip
    item = stored(pbx, "*", **{"from": "+15550004444"})
    assert re.fullmatch(r"[0-9a-f]{24}", item["sessionId"]), item
    # And its Kore fetch by that sessionId finds it.
    response = httpx.get(
        f"{pbx.sip.service.url}/api/public/bot/{pbx.sip.bot}/voicemail",
        params={"sessionId": item["sessionId"]},
        headers={"auth": pbx.sip.token},
        timeout=30,
    )
    assert response.status_code == 200 and response.json()["status"] == "success", response.text


def audit_entries(pbx: Pbx, **match: object) -> list[dict[str, Any]]:
    """The ``sip.call`` audit entries whose detail has these values, as ``voicemail audit
    list --json`` shows them."""
    with pbx.admin.sessions() as session:
        rows = audit.list_entries(session, action=audit.SIP_CALL, limit=audit.MAX_LIST)
        entries = [
            {
                "actor": row.actor,
                "botId": row.bot_id,
                "sessionId": row.session_id,
                "voicemailId": row.voicemail_id,
                "detail": row.detail,
            }
            for row in rows
        ]
    return [e for e in entries if all(e["detail"].get(k) == v for k, v in match.items())]


def metric(body: str, name: str, **labels: str) -> float:
    """One sample's value from a text exposition."""
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


@pytest.mark.no_sql
def test_refusals_are_logged_and_audited_up_to_the_limit_per_source(pbx: Pbx) -> None:
    before = httpx.get(f"{pbx.sip.service.url}/metrics", timeout=30).text
    calls_made = REFUSALS_PER_MINUTE + 2
    sipp_call(pbx.sip, refused(403, pbx.sip.work), pbx.sip.bot, "-m", str(calls_made),
         source="127.0.0.2")  # fmt: skip
    after = httpx.get(f"{pbx.sip.service.url}/metrics", timeout=30).text
    refused_now = metric(after, "voicemail_sip_calls_total", outcome="refused")
    assert refused_now - metric(before, "voicemail_sip_calls_total", outcome="refused") == (
        calls_made
    )  # every refusal counts; only the log and the audit are bounded

    def logged() -> list[dict[str, Any]]:
        text = pbx.sip.service.log.read_text().splitlines()
        lines = [json.loads(line) for line in text if line.startswith("{")]
        return [
            line
            for line in lines
            if line.get("event") == "SIP call refused"
            and str(line.get("source", "")).startswith("127.0.0.2:")
        ]

    assert len(logged()) == REFUSALS_PER_MINUTE
    assert {line["status"] for line in logged()} == {403}

    def forbidden() -> list[dict[str, Any]]:
        entries = audit_entries(pbx, outcome="forbidden_source")
        return [e for e in entries if e["detail"]["source"].startswith("127.0.0.2:")]

    wait_until(forbidden, timeout=30, what="the refusals' audit entries")
    time.sleep(0.5)  # none more comes
    entries = forbidden()
    assert len(entries) == REFUSALS_PER_MINUTE
    assert entries[0]["actor"] == "sip:127.0.0.2"


# A standalone `voicemail sip` with digest authentication ---------------------------------


@dataclass
class Standalone:
    sip: Sip  # its address; the pbx's service (same data folder) for the CLI and the API
    metrics_url: str
    client_id: str
    secret: str


def start_sip(pbx: Pbx, home: Path, address: str, metrics_port: int,
              **settings: str) -> subprocess.Popen[bytes]:  # fmt: skip
    rtp = free_udp_port("127.0.0.1")
    env = {**pbx.sip.service.env, **settings}
    env.pop("VOICEMAIL_SIP_LISTEN")
    env["VOICEMAIL_SIP_RTP_PORTS"] = f"{rtp}-{rtp + 40}"
    with (home / f"sip-{metrics_port}.log").open("wb") as log:
        return subprocess.Popen(
            [*VOICEMAIL, "sip", "--listen", address, "--metrics-port", str(metrics_port)],
            env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def readyz(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return None


@pytest.fixture(scope="module")
def standalone(pbx: Pbx, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    home = tmp_path_factory.mktemp("sip-standalone")
    address = f"127.0.0.1:{free_udp_port('127.0.0.1')}"
    port = free_port()
    process = start_sip(
        pbx, home, address, port, VOICEMAIL_SIP_AUTH="true", VOICEMAIL_SIP_REFUSALS_PER_MINUTE="20"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is None and readyz(url) == 200, timeout=60,
                   what="voicemail sip ready")  # fmt: skip
        client_id, secret = pbx.app(auth.SCOPE_DEPOSIT)
        work = home / "sipp"
        work.mkdir()
        (work / "clip.ulaw").write_bytes(ULAW_SILENCE * 8000 * 5)
        sip = Sip(pbx.sip.service, address, pbx.sip.bot, pbx.sip.token, work)
        yield Standalone(sip, f"{url}/metrics", client_id, secret)
    finally:
        process.terminate()
        process.wait(timeout=60)


def authenticated(s: Standalone, scenario: str, mailbox: str, session: str, client_id: str,
                  secret: str, *args: str) -> None:  # fmt: skip
    sipp_call(s.sip, SCENARIOS / scenario, mailbox, "-key", "session_id", session,
         "-au", client_id, "-ap", secret, *args)  # fmt: skip


@pytest.mark.no_sql
def test_digest_auth_challenges_then_accepts_an_apps_credentials(
    pbx: Pbx, standalone: Standalone
) -> None:
    before = httpx.get(standalone.metrics_url, timeout=30).text
    # No credentials: the challenge, with a nonce, MD5 and qop=auth.
    challenge = refused(401, standalone.sip.work)
    sipp_call(standalone.sip, challenge, "1001", "-trace_msg")
    [messages] = standalone.sip.work.glob(f"{challenge.stem}_*_messages.log")
    assert re.search(r'WWW-Authenticate: Digest realm="voicemail", nonce="[0-9a-f]+\.[0-9a-f]{32}",'
                     r' algorithm=MD5, qop="auth"', messages.read_text())  # fmt: skip
    # The app's client id and secret: the call is answered and its message stored.
    authenticated(standalone, "authenticated_call.xml", "1001", "5e55100000000000000005e1",
                  standalone.client_id, standalone.secret, "-d", str(CALL_MS))  # fmt: skip
    item = stored(pbx, "5e55100000000000000005e1")
    assert item["to"] == "1001"

    after = httpx.get(standalone.metrics_url, timeout=30).text

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("voicemail_sip_calls_total", outcome="stored") == 1
    assert delta("voicemail_sip_calls_total", outcome="refused") == 0  # a challenge is not one
    assert metric(after, "voicemail_sip_active_calls") == 0
    # 20 ms packets for the whole call (what sipp streams begins at its answer).
    packets = CALL_MS / 20
    assert (
        0.6 * packets <= delta("voicemail_sip_rtp_packets_total", kind="received") <= packets + 10
    )
    assert delta("voicemail_sip_rtp_packets_total", kind="lost") == 0
    assert delta("voicemail_sip_jitter_seconds_count") == 1
    assert 0 <= delta("voicemail_sip_jitter_seconds_sum") < 0.5

    [entry] = wait_until(lambda: audit_for(pbx, item), timeout=30, what="the audit entry")
    assert entry["botId"] == pbx.sip.bot
    assert entry["sessionId"] == "5e55100000000000000005e1"
    assert entry["voicemailId"]
    assert entry["detail"]["source"].startswith("127.0.0.1:")
    assert entry["detail"]["callId"] and entry["detail"]["status"] == 200
    assert "+15551230000" not in json.dumps(entry)  # never the caller's number


def audit_for(pbx: Pbx, item: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in audit_entries(pbx, outcome="stored")
            if e["sessionId"] == item["sessionId"]]  # fmt: skip


@pytest.mark.no_sql
def test_digest_auth_refuses_a_wrong_secret_and_an_app_without_the_deposit_scope(
    pbx: Pbx, standalone: Standalone
) -> None:
    before = httpx.get(standalone.metrics_url, timeout=30).text
    scenario = (SCENARIOS / "authentication_refused.xml").read_text().replace("STATUS", "403")
    path = standalone.sip.work / "authentication-403.xml"
    path.write_text(scenario)
    sipp_call(standalone.sip, path, "1001", "-key", "session_id", "5e55100000000000000006f1",
         "-au", standalone.client_id, "-ap", standalone.secret + "x")  # fmt: skip
    reader_id, reader_secret = pbx.app(auth.SCOPE_FETCH)
    sipp_call(standalone.sip, path, "1001", "-key", "session_id", "5e55100000000000000006f2",
         "-au", reader_id, "-ap", reader_secret)  # fmt: skip
    after = httpx.get(standalone.metrics_url, timeout=30).text
    assert (
        metric(after, "voicemail_sip_calls_total", outcome="refused")
        - metric(before, "voicemail_sip_calls_total", outcome="refused")
        == 2
    )

    def refusals() -> set[str]:
        entries = audit_entries(pbx)
        return {e["detail"]["outcome"] for e in entries if e["detail"]["status"] == 403}

    wanted = {"bad_credentials", "no_deposit_scope"}
    wait_until(lambda: wanted <= refusals(), timeout=30, what="the refusals' audit entries")


@pytest.mark.no_sql
def test_readyz_of_a_sip_process(pbx: Pbx, standalone: Standalone, tmp_path: Path) -> None:
    # `serve` with SIP reports it among its checks.
    body = httpx.get(f"{pbx.sip.service.url}/readyz", timeout=30).json()
    assert body["checks"]["sip"] == "ok"
    # The standalone one answered 200 (its fixture waited for it) and its SIP port answers.
    sipp_call(standalone.sip, SCENARIOS / "options.xml", "health")
    # A `voicemail sip` whose SIP port is taken never becomes ready: /readyz says 503 until
    # the process gives up.
    address = f"127.0.0.1:{free_udp_port('127.0.0.1')}"
    host, port = address.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((host, int(port)))
        metrics_port = free_port()
        process = start_sip(pbx, tmp_path, address, metrics_port)
        seen: set[int | None] = set()
        while process.poll() is None:
            seen.add(readyz(f"http://127.0.0.1:{metrics_port}"))
            time.sleep(0.1)
            assert len(seen) < 100 or True
        assert process.wait(timeout=60) != 0
    assert 200 not in seen, seen


# The pure parts: the digest, the forwarding headers, the refusal budget --------------------


@pytest.mark.no_sql
def test_the_digest_is_rfc_2617s() -> None:
    """RFC 2617 §3.5's worked example (qop=auth), and the same without qop (RFC 2069)."""
    header = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    credentials = digest.parse_authorization(header)
    assert credentials is not None and credentials.algorithm == "MD5"
    assert digest.response_matches(credentials, password="Circle Of Life", method="GET")
    assert not digest.response_matches(credentials, password="Circle of Life", method="GET")
    assert not digest.response_matches(credentials, password="Circle Of Life", method="INVITE")
    for bad in ("Basic dXNlcjpwYXNz", "Digest username=", 'Digest realm="x"', "x" * 5000):
        assert digest.parse_authorization(bad) is None


@pytest.mark.no_sql
def test_a_nonce_is_good_from_its_source_for_a_while() -> None:
    key = b"k" * 32
    nonce = digest.new_nonce(key, "192.0.2.1", now=1000.0)
    assert digest.check_nonce(key, nonce, "192.0.2.1", now=1010.0) is digest.NonceCheck.GOOD
    later = 1000.0 + digest.NONCE_SECONDS + 1
    assert digest.check_nonce(key, nonce, "192.0.2.1", now=later) is digest.NonceCheck.STALE
    assert digest.check_nonce(key, nonce, "192.0.2.2", now=1010.0) is digest.NonceCheck.BAD
    assert digest.check_nonce(b"o" * 32, nonce, "192.0.2.1", now=1010.0) is digest.NonceCheck.BAD
    assert digest.check_nonce(key, "nothing", "192.0.2.1") is digest.NonceCheck.BAD


@pytest.mark.no_sql
def test_forwarding_numbers_most_recent_first() -> None:
    request = parse_request(
        "INVITE sip:vm@us SIP/2.0\r\n"
        'Diversion: <sip:1002@pbx>;reason=no-answer, "Front desk" <tel:+15550001111>\r\n'
        "History-Info: <sip:vm@us>;index=1.1.1, <sip:+15557770000@pbx>;index=1\r\n"
        "History-Info: <sip:1001@pbx?Reason=SIP%3Bcause%3D486>;index=1.1\r\n"
        "P-Asserted-Identity: <sip:%2B15559876543@pbx>\r\n\r\n"
    )
    assert routing.forwarding_numbers(request) == [
        "1002", "+15550001111", "vm", "1001", "+15557770000",
    ]  # fmt: skip
    assert routing.caller_of(request) == "+15559876543"


@pytest.mark.no_sql
def test_refusals_are_told_up_to_the_limit_per_source_and_minute() -> None:
    now = [0.0]
    limiter = RefusalLimiter(2, max_sources=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, False, False]
    assert limiter.allow("b")  # another source has its own budget
    now[0] = 61.0
    assert limiter.allow("a")  # a new minute
    for host in ("c", "d", "e"):  # more sources than tracked: the oldest are forgotten
        limiter.allow(host)
    assert len(limiter._windows) == 3
