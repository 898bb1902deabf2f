"""The OpenAPI document's promises, checked on the document itself (fast; the fuzz test in
``tests/fuzz`` holds a running server to them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voicemail.app import create_app
from voicemail.settings import Settings

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    return create_app(settings).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_no_operation_declares_fastapis_422(document: dict[str, Any]) -> None:
    """Invalid input is answered 400 in Kore's envelope, never 422."""
    for method, path, operation in operations(document):
        assert "422" not in operation["responses"], (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_declared_error_is_the_kore_envelope(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and path != "/readyz":
                schema = response["content"]["application/json"]["schema"]
                assert schema == ENVELOPE, (method, path, status)
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["errors"]
    assert document["components"]["schemas"]["ErrorDetail"]["required"] == ["msg", "code"]


def test_token_routes_declare_their_schemes_and_errors(document: dict[str, Any]) -> None:
    secured = [
        (method, path, operation)
        for method, path, operation in operations(document)
        if path.startswith(("/api/public/", "/api/1.1/public/", "/api/admin/"))
        and "/jambonz/" not in path
    ]
    assert len(secured) == 14
    for method, path, operation in secured:
        assert operation["security"] == [{"auth": []}, {"bearer": []}], (method, path)
        assert {"400", "401", "403", "429"} <= set(operation["responses"]), (method, path)
        retry_after = operation["responses"]["429"]["headers"]["Retry-After"]
        assert retry_after["required"] is True
    schemes = document["components"]["securitySchemes"]
    assert schemes["auth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "auth",
        "description": schemes["auth"]["description"],
    }
    assert (schemes["bearer"]["type"], schemes["bearer"]["scheme"]) == ("http", "bearer")
    assert (schemes["wsBasic"]["type"], schemes["wsBasic"]["scheme"]) == ("http", "basic")


def test_jambonz_webhooks_take_basic_credentials_only(document: dict[str, Any]) -> None:
    jambonz = [
        (method, path, operation)
        for method, path, operation in operations(document)
        if "/jambonz/" in path
    ]
    assert sorted((method, path) for method, path, _ in jambonz) == [
        ("GET", "/api/public/bot/{botId}/jambonz/call"),
        ("GET", "/api/public/bot/{botId}/jambonz/greeting/{version}.wav"),
        ("POST", "/api/public/bot/{botId}/jambonz/call"),
        ("POST", "/api/public/bot/{botId}/jambonz/status"),
    ]
    for method, path, operation in jambonz:
        if path.endswith(".wav"):  # authorized by its signed URL, as media URLs are
            assert "security" not in operation
            assert {"400", "403", "404"} <= set(operation["responses"])
            continue
        assert operation["security"] == [{"wsBasic": []}], (method, path)
        assert {"400", "401", "403", "404", "413", "429"} <= set(operation["responses"])


def test_deposit_declares_too_large_and_not_multipart(document: dict[str, Any]) -> None:
    responses = document["paths"]["/api/public/bot/{botId}/voicemail"]["post"]["responses"]
    assert {"413", "415"} <= set(responses)


def test_flags_and_enums_are_typed(document: dict[str, Any]) -> None:
    fetch = document["paths"]["/api/public/bot/{botId}/voicemail"]["get"]
    flags = {p["name"]: p["schema"] for p in fetch["parameters"] if p["in"] == "query"}
    assert flags["transcription"]["type"] == "boolean"
    assert flags["words"]["type"] == "boolean"
    schemas = document["components"]["schemas"]
    assert schemas["FetchResponse"]["properties"]["status"]["enum"] == [
        "success",
        "media_unavailable",
        "media_in_progress",
    ]
    events = schemas["SubscriptionCreate"]["properties"]["events"]["items"]["enum"]
    assert "transcription.completed" in events
    assert schemas["Delivery"]["properties"]["status"]["enum"] == [
        "pending",
        "delivered",
        "failed",
        "cancelled",
    ]


def test_the_media_route_declares_range_and_416(document: dict[str, Any]) -> None:
    [(_, _, media)] = [op for op in operations(document) if "getMediaStream" in op[1]]
    assert "security" not in media  # the signature in the URL is the credential
    headers = [p["name"] for p in media["parameters"] if p["in"] == "header"]
    assert headers == ["Range"]
    assert media["responses"]["416"]["headers"]["Content-Range"]["required"] is True


def test_operation_ids_are_stable_names(document: dict[str, Any]) -> None:
    """A client generated from the document keeps its method names when a path changes:
    the ids are the operations' names, unique, and the /api/1.1 copies say so."""
    ids = {
        (method, path): operation["operationId"] for method, path, operation in operations(document)
    }
    assert len(set(ids.values())) == len(ids)
    assert ids["GET", "/api/public/bot/{botId}/voicemail"] == "fetchVoicemail"
    assert ids["POST", "/api/public/bot/{botId}/voicemail"] == "depositVoicemail"
    assert ids["DELETE", "/api/1.1/public/bot/{botId}/voicemail"] == "deleteVoicemailV1_1"
    assert ids["GET", "/api/public/bot/{botId}/voicemails"] == "listVoicemails"
    for operation_id in ids.values():
        assert operation_id.replace("V1_1", "").isalnum(), operation_id
