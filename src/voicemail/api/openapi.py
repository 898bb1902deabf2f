"""The OpenAPI document (``/openapi.json``, ``/docs``), made to describe the API as it is.

Each route declares its own answers (``errors.error_responses``: Kore's envelope and the
statuses it really answers) and the token dependency declares the ``auth`` header and
Bearer schemes. What is left is done here, once the document is generated:

- FastAPI declares a 422 for every route with parameters; this API answers invalid input
  with 400 in Kore's envelope instead, so those 422s and their schemas are removed;
- any operation can answer 400 to a URL holding NUL (``middleware.NulRefusingMiddleware``),
  so one that declares no 400 of its own gets that one;
- the live deposit is a WebSocket, which OpenAPI cannot describe as an operation; its HTTP
  Basic scheme (client id and secret) is declared all the same, and the route described.

The property-based fuzz test (``tests/fuzz``) holds the server to this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from voicemail.api.envelope import ErrorEnvelope

WS_BASIC = "wsBasic"
DESCRIPTION = (
    "Kore-compatible voicemail API. Errors are always Kore's envelope, "
    '`{"errors": [{"msg": "…", "code": N}]}`.\n\n'
    "Live deposit (not an OpenAPI operation): a WebSocket at "
    "`/api/public/bot/{botId}/voicemail/stream` (also under `/api/1.1`), authenticated by "
    f"the `auth` header, a Bearer token, or HTTP Basic with the app's client id and secret "
    f"(`{WS_BASIC}`); the first frame is the call's JSON metadata, then 16-bit PCM frames."
)
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_NUL_IN_URL = {
    "description": "The URL holds a NUL character",
    "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorEnvelope.__name__}"}}
    },
}


def operation_id(route: APIRoute) -> str:
    """A stable ``operationId`` for a client generator: the route function's name in camel
    case (``fetchVoicemail``), with ``V1_1`` for the same operation under ``/api/1.1`` (Kore
    serves both prefixes). FastAPI's default spells the path and method into it, so any
    change of a path renamed every generated client method."""
    head, *rest = route.name.split("_")
    name = head + "".join(word.capitalize() for word in rest)
    return f"{name}V1_1" if route.path_format.startswith("/api/1.1/") else name


def install_openapi(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _as_served(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _as_served(schema: dict[str, Any]) -> dict[str, Any]:
    schema["info"]["description"] = DESCRIPTION
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses.setdefault("400", _NUL_IN_URL)
    components = schema.setdefault("components", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        components.get("schemas", {}).pop(name, None)
    components.setdefault("securitySchemes", {})[WS_BASIC] = {
        "type": "http",
        "scheme": "basic",
        "description": "The live-deposit WebSocket and the jambonz webhooks "
        "(`/api/public/bot/{botId}/jambonz/…`): the app's client id and secret",
    }
    return schema
