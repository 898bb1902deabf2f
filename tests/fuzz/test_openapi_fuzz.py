"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis).

A real ``voicemail serve`` (on SQLite, then on PostgreSQL; a folder; no worker: nothing here
needs the model) is
set up with a bot, an app holding every scope on it, a stored voicemail, a webhook
subscription and its delivery. The schema is read from the running server's
``/openapi.json``, and for every operation in it schemathesis generates requests, valid
ones and invalid ones, sends them over HTTP, and checks each answer:

- no 5xx (``not_a_server_error``);
- the status code is one the operation declares (``status_code_conformance``), with the
  declared content type and headers (``Retry-After`` on 429…) and a body that matches the
  declared schema: Kore's error envelope for every error (``response_schema_conformance``).

With credentials, a third of the generated requests have their path's ids replaced by the
real bot's, session's, subscription's, delivery's (and the media route by a real signed
URL, with Range headers of its own strategy: well-formed, thousands of digits, any text),
so the fuzzer reaches past the authorization check into the routes themselves, and a
third are aimed there too with one parameter replaced by a known-hostile value. Without
credentials, every operation that declares a security scheme must answer 401 in the
envelope.

Each operation's cases come from schemathesis's Python API (``operation.as_strategy``)
under Hypothesis's ``@given``: its pytest integration (``schemathesis.pytest``) does not
run under pytest 9. One test per operation and mode, named after the app's own document;
``test_the_served_schema_has_these_operations`` checks the served one has the same.

Bounded for CI and deterministic (a fixed seed, no example database): a failure is a bug,
not bad luck. ``VOICEMAIL_FUZZ_EXAMPLES`` runs more examples per operation locally.
"""

from __future__ import annotations

import os
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.audio import write_wav
from tests.helpers.deposits import deposit_file
from tests.helpers.http import get_voicemail
from tests.helpers.jambonz import basic_auth
from tests.helpers.processes import Admin, Cluster, cluster_at
from tests.services.postgres import PostgresServer
from voicemail.app import create_app
from voicemail.audit import service as audit
from voicemail.auth import service as auth
from voicemail.bots import service as bots
from voicemail.db.migrate import upgrade
from voicemail.settings import Settings
from voicemail.webhooks import service as webhooks
from voicemail.webhooks.events import WebhookEvent

SESSION = "67aa38026e199c8f470e0f22"
DELETED_SESSION = "67aa38026e199c8f470e0f23"  # what the fuzzed DELETEs get to delete
EXAMPLES = int(os.environ.get("VOICEMAIL_FUZZ_EXAMPLES", "50"))
SEED = 20261202
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# (method, path template, status, Aim.kind) of each request sent with credentials, and the
# statuses of those sent without: for the coverage test at the end.
# Per server (its URL).
SENT: defaultdict[str, Counter[tuple[str, str, int, str]]] = defaultdict(Counter)
UNAUTHENTICATED: defaultdict[str, Counter[int]] = defaultdict(Counter)
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class Target:
    """The running server and real ids on it."""

    url: str
    token: str
    bot_id: str
    session_id: str
    webhook_id: str
    deleted_webhook_id: str  # what the fuzzed DELETEs of a subscription get to delete
    delivery_id: int
    media_path: dict[str, str]  # the signed URL's path parameters
    media_query: dict[str, str]  # e, n, s
    basic: dict[str, str]  # the app's client id and secret, for the jambonz webhooks
    greeting_version: str  # the jambonz greeting URL's
    greeting_query: dict[str, str]  # e, n, s

    def headers(self, operation: Any) -> dict[str, str]:
        """The credentials an operation takes: HTTP Basic for the jambonz webhooks."""
        if operation.definition.raw.get("security") == [{"wsBasic": []}]:
            return self.basic
        return {"auth": self.token}


def _media_parts(file_url: str) -> tuple[dict[str, str], dict[str, str]]:
    parsed = urllib.parse.urlsplit(file_url)
    segments = parsed.path.split("/")
    names = ["env", "org", "bot", "year", "day", "file"]
    path = dict(zip(names, segments[-6:], strict=True))
    query = dict(urllib.parse.parse_qsl(parsed.query))
    return path, query


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The server on SQLite, then on a PostgreSQL database of its own (which refuses some
    values SQLite stores, NUL in text for one)."""
    home = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        for cluster in cluster_at(home, None):
            yield _set_up(cluster)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database_url = server.create_database()
    try:
        upgrade(database_url)
        for cluster in cluster_at(home, database_url):
            yield _set_up(cluster)
    finally:
        server.drop_database(database_url)


def _set_up(cluster: Cluster) -> Target:
    admin = Admin(cluster)
    try:
        with admin.runtime.sessions.begin() as session:
            bot = bots.create_bot(session, name="Fuzzed line")
            created = auth.create_app(
                session,
                box=admin.runtime.box,
                name="Fuzzer",
                bot_id=bot.id,
                scopes=list(auth.KNOWN_SCOPES),
            )
            webhook_id, deleted_webhook_id = (
                webhooks.create_subscription(
                    session,
                    box=admin.runtime.box,
                    actor=audit.CLI,
                    bot_id=bot.id,
                    url=f"https://receiver.example/{name}",
                    events=list(WebhookEvent),
                ).subscription.id
                for name in ("kept", "deleted")
            )
            bot_id, app_id, secret = bot.id, created.app.id, created.client_secret
        clip = write_wav(
            cluster.home / "tone.wav", 0.3 * np.sin(np.arange(16_000 * 2) * 0.06), 16_000
        )
        for session_id in (SESSION, DELETED_SESSION):
            deposit_file(admin.runtime, bot_id, clip, work=admin.work, session_id=session_id)
        with admin.runtime.sessions() as session:
            # One about the session the fuzzer keeps: the other one's voicemail gets deleted,
            # and a delivery about a deleted voicemail cannot be sent again (409).
            [delivery, *_] = [
                row
                for row in webhooks.list_deliveries(session, subscription_id=webhook_id)
                if SESSION in row.body
            ]
    finally:
        admin.close()
    proc = cluster.serve("api", "--no-worker")
    assert proc.url is not None
    token = jwt.encode({"appId": app_id}, secret, "HS256")
    fetched = get_voicemail(proc.url, bot_id, headers={"auth": token}, sessionId=SESSION)
    assert fetched.status_code == 200, fetched.text
    media_path, media_query = _media_parts(fetched.json()["voicemail_recording"][0]["fileUrl"])
    basic = basic_auth(app_id, secret)
    verbs = httpx.post(
        f"{proc.url}/api/public/bot/{bot_id}/jambonz/call",
        json={"call_sid": "fuzz"},
        headers=basic,
        timeout=30,
    )
    assert verbs.status_code == 200, verbs.text
    greeting = urllib.parse.urlsplit(verbs.json()[1]["url"])
    return Target(
        url=proc.url,
        token=token,
        bot_id=bot_id,
        session_id=SESSION,
        webhook_id=webhook_id,
        deleted_webhook_id=deleted_webhook_id,
        delivery_id=delivery.id,
        media_path=media_path,
        media_query=media_query,
        basic=basic,
        greeting_version=greeting.path.rsplit("/", 1)[-1].removesuffix(".wav"),
        greeting_query=dict(urllib.parse.parse_qsl(greeting.query)),
    )


def _config(base_url: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            "seed": SEED,
            "generation": {"database": "none", "deterministic": True},
            "phases": {"stateful": {"enabled": False}},
        }
    )


@pytest.fixture(scope="module")
def api_schema(target: Target) -> Any:
    return schemathesis.openapi.from_url(f"{target.url}/openapi.json", config=_config(target.url))


def test_fixture_paths_exist(target: Target) -> None:
    """The real ids the fuzzer substitutes do exist (else it would only reach 404s)."""
    response = httpx.get(
        f"{target.url}/api/admin/bots/{target.bot_id}/webhooks/{target.webhook_id}/deliveries",
        headers={"auth": target.token},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert target.delivery_id in [row["id"] for row in response.json()["deliveries"]]


def _operations() -> list[tuple[str, str]]:
    """Every operation of the app's schema, for the test ids (the tests themselves read the
    running server's document; ``test_the_served_schema_has_these_operations`` ties both)."""
    app = create_app(Settings(_env_file=None, data_dir=Path("unused")))  # type: ignore[call-arg]
    return [
        (method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item
    ]


OPERATIONS = _operations()


def test_the_served_schema_has_these_operations(api_schema: Any) -> None:
    served = [
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    ]
    assert sorted(served) == sorted(OPERATIONS)


def _use_real_ids(case: Any, target: Target, range_header: str | None) -> None:
    """Point the request at the real bot and its objects, keeping the fuzzed rest; a DELETE
    gets objects of its own, so that the other operations keep theirs."""
    deleting = case.method.upper() == "DELETE"
    params = case.path_parameters
    real: dict[str, Any] = {
        "botId": target.bot_id,
        "webhookId": target.deleted_webhook_id if deleting else target.webhook_id,
        "deliveryId": target.delivery_id,
    }
    for name, value in real.items():
        if name in params:
            params[name] = value
    # Also where the generator left the (optional in the document) sessionId out: the fetch
    # and the delete need one to reach their object.
    takes_session = "sessionId" in case.query or case.path.endswith("/voicemail")
    if takes_session and case.method.upper() != "POST":
        case.query["sessionId"] = DELETED_SESSION if deleting else target.session_id
    if case.path.endswith("/jambonz/greeting/{version}.wav"):
        params["version"] = target.greeting_version
        case.query.update(target.greeting_query)
    if case.path.startswith("/api/getMediaStream/"):
        params.update(target.media_path)
        case.query.update(target.media_query)
        if range_header is not None:
            case.headers["Range"] = range_header


# Range headers for the real media URL: well-formed ones, ones starting past the end, a few
# thousand digits (past Python's 4300-digit int limit), and any printable text.
RANGES = st.one_of(
    st.none(),
    st.from_regex(r"\Abytes=[0-9]{0,7}-[0-9]{0,7}\Z"),
    # Starts past the end of any recording (20 MB at most): 416, whatever else is drawn.
    st.from_regex(r"\Abytes=[1-9][0-9]{8,12}-([0-9]{0,14})?\Z"),
    st.tuples(
        st.sampled_from(["bytes={}-", "bytes=0-{}", "bytes=-{}", "bytes={}-{}"]),
        st.sampled_from([18, 19, 20, 4300, 4301, 6000]),
    ).map(lambda spec: spec[0].format(*["9" * spec[1]] * spec[0].count("{}"))),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)


# Values that have broken servers, for one parameter of a request aimed at real objects:
# NUL (PostgreSQL refuses it in text), numbers past 64 bits and past Python's 4300-digit
# int limit, SQL, bidi and other control characters, a long id. (Path traversal is not
# here: the HTTP client would resolve it to another route; test_media_urls.py tries it.)
HOSTILE = [
    "\x00",
    "st-\x00",
    "%00",
    str(2**64),
    "9" * 4301,
    "-1",
    "' OR 1=1 --",
    "\u202e+15550100",
    "\x1b[2J",
    " ",
    "st-" + "x" * 3000,
]


@dataclass(frozen=True)
class Aim:
    """Where one generated request is pointed: as generated ("fuzzed"), at the real objects
    ("real"), or at them with one parameter replaced by a hostile value ("hostile")."""

    kind: str
    range_header: str | None
    hostile: str
    which: int

    def apply(self, case: Any, target: Target) -> None:
        if self.kind == "fuzzed":
            return
        _use_real_ids(case, target, self.range_header)
        if self.kind == "hostile":
            names = [("path", name) for name in sorted(case.path_parameters)]
            names += [("query", name) for name in sorted(case.query)]
            if names:
                where, name = names[self.which % len(names)]
                (case.path_parameters if where == "path" else case.query)[name] = self.hostile


AIMS = st.builds(
    Aim,
    kind=st.sampled_from(["fuzzed", "real", "hostile"]),
    range_header=RANGES,
    hostile=st.sampled_from(HOSTILE),
    which=st.integers(0, 7),
)


def _fuzz(api_schema: Any, method: str, path: str, mode: GenerationMode, send: Any) -> None:
    operation = api_schema[path][method.lower()]

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(mode), aim=AIMS)
    def run(case: Any, aim: Aim) -> None:
        send(case, aim)

    try:
        run()
    except Unsatisfiable:
        if mode != GenerationMode.NEGATIVE:
            raise
        pytest.skip("no parameter of this operation can be made invalid")


MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.mark.parametrize("mode", MODES, ids=[mode.value for mode in MODES])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_with_credentials(
    api_schema: Any, target: Target, method: str, path: str, mode: GenerationMode
) -> None:
    def send(case: Any, aim: Aim) -> None:
        aim.apply(case, target)
        # Ours, not a generated Authorization (negative cases make up HTTP Basic ones).
        for name in [name for name in case.headers if name.lower() in ("auth", "authorization")]:
            del case.headers[name]
        case.headers.update(target.headers(case.operation))
        response = case.call(timeout=60)
        SENT[target.url][method, path, response.status_code, aim.kind] += 1
        case.validate_response(response, checks=CHECKS)
        # Negative cases of an HTTP Basic operation may drop its Authorization header when
        # sent (schemathesis's missing-credentials case): a 401 is then the right answer.
        sent_credentials = response.request.headers.get("Authorization")
        dropped = "Authorization" in target.headers(case.operation) and sent_credentials is None
        assert response.status_code != 401 or dropped, response.text

    _fuzz(api_schema, method, path, mode, send)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_secured_operation_without_credentials_is_401(
    api_schema: Any, target: Target, method: str, path: str
) -> None:
    operation = api_schema[path][method.lower()]
    if not operation.definition.raw.get("security"):
        pytest.skip("no security scheme: public, or authorized by a signed URL")

    def send(case: Any, aim: Aim) -> None:
        # Without hostile values: a URL holding NUL is refused (400) before its credentials.
        replace(aim, kind="real" if aim.kind == "hostile" else aim.kind).apply(case, target)
        for name in [name for name in case.headers if name.lower() in ("auth", "authorization")]:
            del case.headers[name]
        response = case.call(timeout=60)
        UNAUTHENTICATED[target.url][response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        assert response.status_code == 401, response.text
        [error] = response.json()["errors"]
        assert error["code"] == 4002

    _fuzz(api_schema, method, path, GenerationMode.POSITIVE, send)


# Operations whose bodies random data cannot make valid: a recording to decode, a URL to
# deliver to. Reaching them is a 400 from the route itself (with a real bot and a token).
REFUSE_RANDOM_BODIES = {
    ("POST", "/api/public/bot/{botId}/voicemail"),
    ("POST", "/api/1.1/public/bot/{botId}/voicemail"),
    ("POST", "/api/admin/bots/{botId}/webhooks"),
}


def test_the_fuzzer_reached_every_operation(target: Target) -> None:
    """Not vacuous: every operation answered the fuzzer with success (or, for those above,
    with the route's own 400), the media route served ranges, and every secured operation
    was tried without credentials."""
    sent, unauthenticated = SENT[target.url], UNAUTHENTICATED[target.url]
    if not sent:
        pytest.skip("counts the requests of the fuzz tests above; run it with them")
    print(f"\n{sent.total() + unauthenticated.total()} requests:")
    for key in sorted(sent):
        print(*key, sent[key])
    for method, path in OPERATIONS:
        statuses = {s for (m, p, s, kind) in sent if (m, p) == (method, path) and kind == "real"}
        wanted = {400} if (method, path) in REFUSE_RANDOM_BODIES else set(range(200, 300))
        if method == "DELETE":
            wanted.add(404)  # its object deleted by an earlier request (under another prefix)
        assert statuses & wanted, f"{method} {path} answered only {sorted(statuses)}"
    media = {status for (_, path, status, _) in sent if path.startswith("/api/getMediaStream/")}
    assert {200, 206, 416} <= media, media
    assert set(unauthenticated) == {401}
    assert unauthenticated.total() >= EXAMPLES * 9
