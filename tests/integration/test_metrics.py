"""Observability: Prometheus ``/metrics`` (deposits, the job queue, job and HTTP latency) and
request ids carried from the header into every log line of the request."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import prometheus_client
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import update

from tests.helpers.audio import tone, write_wav
from tests.helpers.cli import run_cli
from tests.helpers.credentials import Credentials
from tests.helpers.http import post_voicemail
from tests.helpers.net import free_port
from voicemail.app import create_app
from voicemail.db.base import utcnow
from voicemail.db.engine import make_engine, make_sessionmaker
from voicemail.db.models import Job, Voicemail
from voicemail.logs import build_formatter
from voicemail.metrics import UNMATCHED_ROUTE, JobQueueCollector, Metrics, serve_metrics
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber
from voicemail.voicemails import kore
from voicemail.worker import build_worker

DEPOSIT_ROUTE = "/api/public/bot/{botId}/voicemail"
SESSION = "67aa38026e199c8f470e0001"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ------------------------------------------------------------------ helpers


@pytest.fixture
def client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    """The API as a Prometheus on the same host reaches it: from loopback, which the
    default (no metrics token or listen address) lets read /metrics."""
    with api_client(settings, runtime, "127.0.0.1") as test_client:
        yield test_client


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample_name, labels in samples if sample_name == name}


def tone_wav(tmp_path: Path, seconds: float = 2.0, hz: float = 440.0) -> bytes:
    return write_wav(tmp_path / f"tone-{hz}.wav", tone(seconds, 16_000, hz)).read_bytes()


def deposit(client: TestClient, creds: Credentials, audio: bytes, **headers: str) -> httpx.Response:
    return post_voicemail(
        client, creds.bot_id, audio, headers={**creds.headers(), **headers}, sessionId=SESSION
    )


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Our JSON log lines, as written in production, from every logger at INFO and above."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(build_formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def log_lines(stream: io.StringIO) -> list[dict[str, object]]:
    """The server's lines (not those of the test's HTTP client)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines if not str(line["logger"]).startswith("httpx")]


# ------------------------------------------------------------------ /metrics


def test_deposits_and_jobs_are_counted(
    client: TestClient, creds: Credentials, runtime: Runtime, tmp_path: Path
) -> None:
    before = scrape(client)
    for outcome in ("accepted", "duplicate"):
        assert value(before, "voicemail_deposits_total", outcome=outcome, reason="") == 0
    assert value(before, "voicemail_jobs", state="queued") == 0
    assert value(before, "voicemail_job_queue_depth") == 0
    assert value(before, "voicemail_job_queue_up") == 1

    audio = tone_wav(tmp_path)
    assert deposit(client, creds, audio).json()["duplicate"] is False
    assert deposit(client, creds, audio).json()["duplicate"] is True
    assert deposit(client, creds, b"RIFF not really audio").status_code == 400
    no_token = client.post(
        f"/api/public/bot/{creds.bot_id}/voicemail", files={"file": ("a.wav", audio)}
    )
    assert no_token.status_code == 401
    not_multipart = client.post(
        f"/api/public/bot/{creds.bot_id}/voicemail", headers=creds.headers(), content=audio
    )
    assert not_multipart.status_code == 415

    # The job waits; make it look enqueued 90 s ago to see the age gauge move.
    with runtime.sessions.begin() as session:
        session.execute(update(Job).values(created_at=utcnow() - timedelta(seconds=90)))
    waiting = scrape(client)
    assert value(waiting, "voicemail_deposits_total", outcome="accepted", reason="") == 1
    assert value(waiting, "voicemail_deposits_total", outcome="duplicate", reason="") == 1
    rejected = {
        reason: value(waiting, "voicemail_deposits_total", outcome="rejected", reason=reason)
        for reason in label_values(waiting, "voicemail_deposits_total", "reason") - {""}
    }
    assert {reason for reason, count in rejected.items() if count} == {
        "bad_audio",
        "unauthorized",
        "unsupported_media_type",
    }
    assert sum(rejected.values()) == 3
    assert value(waiting, "voicemail_jobs", state="queued") == 1
    assert value(waiting, "voicemail_jobs", state="completed") == 0
    assert value(waiting, "voicemail_job_queue_depth") == 1
    assert 90 <= value(waiting, "voicemail_job_queue_oldest_age_seconds") < 150
    assert ("voicemail_job_latency_seconds_count", frozenset({("kind", "transcribe")})) not in (
        waiting
    )

    assert build_worker(runtime).run_once()

    done = scrape(client)
    assert value(done, "voicemail_jobs", state="queued") == 0
    assert value(done, "voicemail_jobs", state="completed") == 1
    assert value(done, "voicemail_job_queue_depth") == 0
    assert value(done, "voicemail_job_queue_oldest_age_seconds") == 0
    assert value(done, "voicemail_job_latency_seconds_count", kind="transcribe") == 1
    assert 90 <= value(done, "voicemail_job_latency_seconds_sum", kind="transcribe") < 150
    assert value(done, "voicemail_job_latency_seconds_bucket", kind="transcribe", le="60.0") == 0
    assert value(done, "voicemail_job_latency_seconds_bucket", kind="transcribe", le="120.0") == 1
    # The fake transcriber is instant: one observation, far below real time.
    assert value(done, "voicemail_transcription_real_time_factor_count") == 1
    assert value(done, "voicemail_transcription_real_time_factor_bucket", le="0.02") == 1


def test_queue_counts_retries_waiting_and_failures(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    tmp_path: Path,
    transcriber: FakeTranscriber,
) -> None:
    transcriber.error = RuntimeError("model crashed")
    assert deposit(client, creds, tone_wav(tmp_path)).status_code == 202
    worker = build_worker(runtime)
    assert worker.run_once()  # attempt 1 fails; a retry is due (retry base is 0 s in tests)
    retrying = scrape(client)
    assert value(retrying, "voicemail_jobs", state="failed") == 1
    assert value(retrying, "voicemail_job_queue_depth") == 1

    while worker.run_once():  # the remaining attempts fail too
        pass
    failed = scrape(client)
    assert value(failed, "voicemail_jobs", state="failed") == 1
    assert value(failed, "voicemail_job_queue_depth") == 0
    assert not [name for name, _ in failed if name == "voicemail_job_latency_seconds_count"]


@pytest.mark.parametrize("overrides", [{"max_upload_bytes": 40_000}])
def test_too_large_deposits(client: TestClient, creds: Credentials, tmp_path: Path) -> None:
    # Over the limit, under the body guard's (limit + form overhead): refused by the route.
    assert deposit(client, creds, tone_wav(tmp_path, seconds=2)).status_code == 413
    # Far over: refused by the body guard before any route runs.
    assert deposit(client, creds, tone_wav(tmp_path, seconds=10)).status_code == 413
    samples = scrape(client)
    too_large = value(samples, "voicemail_deposits_total", outcome="rejected", reason="too_large")
    assert too_large == 1
    count = "voicemail_http_request_duration_seconds_count"
    assert value(samples, count, route=DEPOSIT_ROUTE, method="POST", status="413") == 2


def test_http_requests_are_labelled_by_route_template(client: TestClient) -> None:
    assert client.get("/api/public/bot/st-xyz/voicemail?sessionId=1").status_code == 401
    assert client.get("/api/1.1/public/bot/st-abc/voicemail").status_code == 401
    assert client.get("/healthz").status_code == 200

    response = client.get("/metrics")
    samples = parse(response.text)
    count = "voicemail_http_request_duration_seconds_count"
    assert value(samples, count, route=DEPOSIT_ROUTE, method="GET", status="401") == 1
    assert value(samples, count, route="/api/1.1" + DEPOSIT_ROUTE[4:], method="GET", status="401")
    assert value(samples, count, route="/healthz", method="GET", status="200") == 1
    assert "st-xyz" not in response.text and "st-abc" not in response.text
    assert "sessionId" not in response.text


def test_unknown_paths_and_methods_add_no_label_values(client: TestClient) -> None:
    client.get("/healthz")
    client.get("/nothing/here")
    baseline = scrape(client)
    routes = label_values(baseline, "voicemail_http_request_duration_seconds_count", "route")
    assert UNMATCHED_ROUTE in routes

    for index in range(25):
        assert client.get(f"/probe-{index}/../etc/passwd").status_code == 404
        client.request("BREW", f"/coffee-{index}")
    client.request("BREW", "/healthz")
    after = client.get("/metrics")
    samples = parse(after.text)
    assert label_values(samples, "voicemail_http_request_duration_seconds_count", "route") == (
        routes | {"/metrics"}
    )
    methods = label_values(samples, "voicemail_http_request_duration_seconds_count", "method")
    assert methods == {"GET", "other"}
    assert "probe-" not in after.text and "coffee" not in after.text and "BREW" not in after.text
    unmatched = "voicemail_http_request_duration_seconds_count"
    assert value(samples, unmatched, route=UNMATCHED_ROUTE, method="GET", status="404") == 26


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.count_deposit(duplicate=False)
    sample = ("voicemail_deposits_total", {"outcome": "accepted", "reason": ""})
    assert first.registry.get_sample_value(*sample) == 1
    assert second.registry.get_sample_value(*sample) == 0
    assert prometheus_client.REGISTRY.get_sample_value(*sample) is None


def test_queue_gauges_report_an_unreadable_database(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")  # so the database can be neither made nor read
    engine = make_engine(f"sqlite:///{tmp_path / 'not-a-folder' / 'nowhere.db'}")
    try:
        metrics = Metrics()
        metrics.registry.register(JobQueueCollector(make_sessionmaker(engine)))
        samples = parse(metrics.render()[0].decode())
    finally:
        engine.dispose()
    assert value(samples, "voicemail_job_queue_up") == 0
    assert not any(name == "voicemail_job_queue_depth" for name, _ in samples)


@pytest.mark.no_sql
def test_a_standalone_worker_serves_its_own_metrics(runtime: Runtime) -> None:
    runtime.metrics.observe_transcription(processing_seconds=1.0, audio_seconds=4.0)
    server = serve_metrics(runtime.metrics, host="127.0.0.1", port=0)
    try:
        response = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    samples = parse(response.text)
    assert value(samples, "voicemail_transcription_real_time_factor_sum") == 0.25
    # The queue is the API's to report (from the database); a worker does not repeat it.
    assert "voicemail_job_queue_depth" not in response.text


# ------------------------------------------------------------------ who may read /metrics

METRICS_TOKEN = "metrics-token-" + "s3cr3t" * 4


def api_client(settings: Settings, runtime: Runtime, address: str) -> TestClient:
    app = create_app(settings, runtime=runtime, run_worker=False)
    return TestClient(app, raise_server_exceptions=False, client=(address, 50000))


@pytest.mark.parametrize("address", ["203.0.113.5", "10.0.0.8", "testclient"])
def test_by_default_metrics_answer_only_loopback_clients(
    settings: Settings, runtime: Runtime, address: str
) -> None:
    with api_client(settings, runtime, address) as outsider:
        response = outsider.get("/metrics")
    assert response.status_code == 403
    [error] = response.json()["errors"]
    assert error["code"] == 403 and "VOICEMAIL_METRICS_TOKEN" in error["msg"]
    assert "voicemail_" not in response.text
    # ::ffff:127.0.0.1: a loopback client of a server listening on "::" (dual stack).
    for loopback in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        with api_client(settings, runtime, loopback) as local:
            assert local.get("/metrics").status_code == 200


@pytest.mark.parametrize("overrides", [{"metrics_token": METRICS_TOKEN}])
def test_with_a_token_every_client_must_send_it(
    settings: Settings, runtime: Runtime, json_logs: io.StringIO
) -> None:
    for address in ("127.0.0.1", "203.0.113.5"):
        with api_client(settings, runtime, address) as scraper:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token-of-the-same-sort"},
                {"Authorization": f"Bearer {METRICS_TOKEN}x"},
                {"Authorization": f"Basic {METRICS_TOKEN}"},
                {"auth": METRICS_TOKEN},
            ):
                refused = scraper.get("/metrics", headers=headers)
                assert refused.status_code == 401, headers
                assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
                assert refused.json()["errors"][0]["code"] == 401
            good = scraper.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert good.status_code == 200
            assert "voicemail_deposits_total" in good.text
    # Neither the token nor a guess at it is ever written to the logs.
    logged = json_logs.getvalue()
    assert log_lines(json_logs), "no log lines were captured"
    assert "s3cr3t" not in logged and "wrong-token" not in logged


@pytest.mark.parametrize("with_token", [False, True])
def test_metrics_on_their_own_listen_address(
    settings: Settings, runtime: Runtime, with_token: bool
) -> None:
    port = free_port()
    update: dict[str, object] = {"metrics_listen": f"127.0.0.1:{port}"}
    if with_token:
        update["metrics_token"] = SecretStr(METRICS_TOKEN)
    settings = settings.model_copy(update=update)
    runtime = dataclasses.replace(runtime, settings=settings)
    with api_client(settings, runtime, "127.0.0.1") as api:
        # The API port no longer serves them, not even to loopback or the token's holder.
        on_api = api.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert on_api.status_code == 404
        assert on_api.json() == {"errors": [{"msg": "Not found", "code": 404}]}
        url = f"http://127.0.0.1:{port}/metrics"
        plain = httpx.get(url, timeout=5)
        if with_token:
            assert plain.status_code == 401
            assert "voicemail_" not in plain.text
            authorized = httpx.get(
                url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5
            )
        else:
            authorized = plain
        assert authorized.status_code == 200
        assert "voicemail_job_queue_depth" in authorized.text
    # The listener ends with the app.
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


@pytest.mark.no_sql
def test_a_standalone_workers_metrics_can_require_the_token(runtime: Runtime) -> None:
    server = serve_metrics(runtime.metrics, host="127.0.0.1", port=0, token=METRICS_TOKEN)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        refused = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
        allowed = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.status_code == 401 and "voicemail_" not in refused.text
    assert allowed.status_code == 200 and "process_cpu_seconds_total" in allowed.text


@pytest.mark.no_sql
def test_a_too_short_metrics_token_is_refused_without_showing_it(settings: Settings) -> None:
    result = run_cli(settings, "bots", "list", env={"VOICEMAIL_METRICS_TOKEN": "short-secret"})
    assert result.returncode == 1
    assert "VOICEMAIL_METRICS_TOKEN" in result.stderr and "16 characters" in result.stderr
    assert "short-secret" not in result.stderr + result.stdout


# ------------------------------------------------------------------ request ids and logs


@pytest.mark.no_sql
def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": "gateway-42.a:b_c"})
    assert echoed.headers["x-request-id"] == "gateway-42.a:b_c"
    generated = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3
    assert all(re.fullmatch(r"[0-9a-f]{16}", rid) for rid in generated)


@pytest.mark.no_sql
@pytest.mark.parametrize(
    "bad",
    [
        "x" * 101,
        "abc\ndef",
        "abc\r\nSet-Cookie: a=b",
        'quote"d',
        "with space",
        "",
        "-leading-dash",
        "üñí",
    ],
    ids=[
        "too-long",
        "newline",
        "header-injection",
        "quote",
        "space",
        "empty",
        "leading-dash",
        "non-ascii",
    ],
)
def test_an_unsafe_request_id_is_replaced(client: TestClient, bad: str) -> None:
    # Sent as raw bytes: an HTTP client would refuse some of these, a hostile one would not.
    response = client.get("/healthz", headers=[(b"X-Request-ID", bad.encode())])
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


def test_every_log_line_of_a_request_carries_its_id(
    client: TestClient, creds: Credentials, tmp_path: Path, json_logs: io.StringIO
) -> None:
    token = creds.token()
    response = deposit(client, creds, tone_wav(tmp_path), **{"X-Request-ID": "trace-0001"})
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "trace-0001"
    client.get("/healthz", headers={"X-Request-ID": "trace-0002"})

    lines = log_lines(json_logs)
    first = [line for line in lines if line.get("request_id") == "trace-0001"]
    events = {line["event"] for line in first}
    assert {"voicemail deposited", "request"} <= events
    access = next(line for line in first if line["event"] == "request")
    assert access["route"] == DEPOSIT_ROUTE
    assert access["status"] == 202
    assert access["path"] == f"/api/public/bot/{creds.bot_id}/voicemail"
    assert {line["request_id"] for line in lines if line["event"] == "request"} == {
        "trace-0001",
        "trace-0002",
    }
    assert not [line for line in lines if "request_id" not in line]
    assert token not in json_logs.getvalue() and creds.client_secret not in json_logs.getvalue()


@pytest.mark.no_sql
def test_a_request_id_reaches_code_run_in_threads(
    client: TestClient, json_logs: io.StringIO
) -> None:
    def work_in_thread() -> dict[str, str]:
        logging.getLogger("voicemail.test").info("in a worker thread")
        return {"ok": "yes"}

    client.app.add_api_route("/test-thread-log", work_in_thread)  # type: ignore[attr-defined]
    client.get("/test-thread-log", headers={"X-Request-ID": "thread-7"})
    inner = [line for line in log_lines(json_logs) if line["event"] == "in a worker thread"]
    assert [line["request_id"] for line in inner] == ["thread-7"]


@pytest.mark.no_sql
def test_an_unhandled_error_keeps_its_request_id(
    client: TestClient, json_logs: io.StringIO
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/test-broken", broken)  # type: ignore[attr-defined]
    response = client.get("/test-broken", headers={"X-Request-ID": "err-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "err-1"
    lines = log_lines(json_logs)
    assert {line["event"] for line in lines if line.get("request_id") == "err-1"} >= {
        "unhandled error",
        "request",
    }


def test_job_log_lines_carry_the_job_and_voicemail_ids(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    tmp_path: Path,
    json_logs: io.StringIO,
) -> None:
    deposited = deposit(client, creds, tone_wav(tmp_path))
    assert deposited.status_code == 202, deposited.text
    json_logs.truncate(0)
    json_logs.seek(0)
    assert build_worker(runtime).run_once()
    with runtime.sessions() as session:
        job = session.query(Job).one()
        voicemail = session.get(Voicemail, job.voicemail_id)
        # The job run is the one of the voicemail this deposit answered for.
        assert voicemail is not None
        assert kore.file_name(voicemail) == deposited.json()["fileName"]
    lines = log_lines(json_logs)
    assert {"job claimed", "voicemail transcribed"} <= {line["event"] for line in lines}
    for line in lines:
        assert line["job_id"] == job.id, line
        assert line["voicemail_id"] == voicemail.id, line
