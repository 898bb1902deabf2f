"""Health, readiness, OpenAPI, and the error envelope outside the public API."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from voicemail.app import create_app
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber


@pytest.mark.no_sql
def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_database_storage_and_model_where_jobs_run(
    settings: Settings, runtime: Runtime, transcriber: FakeTranscriber
) -> None:
    with TestClient(create_app(settings, runtime=runtime, run_worker=True)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "model": "ok"}

        transcriber.is_ready = False
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["model"] == "not ready"


def test_readyz_of_an_api_only_process_never_loads_the_model(
    client: TestClient, transcriber: FakeTranscriber
) -> None:
    transcriber.is_ready = False  # would make the probe fail if it were asked
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}


@pytest.mark.no_sql
def test_openapi_documents_the_public_api(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    fetch = paths["/api/public/bot/{botId}/voicemail"]
    assert {"get", "post"} <= set(fetch)
    assert "/api/1.1/public/bot/{botId}/voicemail" in paths
    assert "multipart/form-data" in fetch["post"]["requestBody"]["content"]
    media = "/api/getMediaStream/smartassistrecording/{env}/{org}/{bot}/{year}/{day}/{file}"
    assert media in paths


@pytest.mark.no_sql
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_another_host(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200
    assert "text/html" in html.headers["content-type"]
    # Every script, stylesheet and icon the page names is ours, and is served.
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset
    assert "https://" not in html.text and "http://" not in html.text


@pytest.mark.no_sql
def test_unknown_route_is_404_in_kore_envelope(client: TestClient) -> None:
    response = client.get("/api/public/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"msg": "Not Found", "code": 404}]}


@pytest.mark.no_sql
def test_responses_carry_a_request_id(client: TestClient) -> None:
    assert len(client.get("/healthz").headers["x-request-id"]) == 16
    echoed = client.get("/healthz", headers={"X-Request-ID": "gateway-42"})
    assert echoed.headers["x-request-id"] == "gateway-42"
