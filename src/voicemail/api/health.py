"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import text

from voicemail.api.deps import RuntimeDep
from voicemail.api.envelope import error_responses
from voicemail.errors import Forbidden, NotFound, VoicemailError
from voicemail.metrics import bearer_token_matches
from voicemail.settings import Settings

router = APIRouter(tags=["operations"])


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database, storage, Redis (when set), where jobs run the speech model, and where "
    "SIP runs its transports",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Something is not ready"}},
)
def readyz(request: Request, runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        runtime.storage.check()
        checks["storage"] = "ok"
    except VoicemailError as exc:
        # Our own message ("S3 bucket 'x' does not exist"): written for operators, no secrets.
        checks["storage"] = f"error: {exc.message}"
    except Exception as exc:
        checks["storage"] = f"error: {type(exc).__name__}"
    if runtime.settings.redis_url:
        # Shared rate limits and JTI replay protection; without it JTI-enforced apps get 503.
        try:
            runtime.replay_guard.check()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    # Only a process that transcribes needs the model; an API-only process (`serve
    # --no-worker`) must not load ~400 MiB it never uses just to answer this probe.
    if request.app.state.runs_worker:
        try:
            checks["model"] = "ok" if runtime.transcriber.ready() else "not ready"
        except Exception as exc:
            checks["model"] = f"error: {type(exc).__name__}: {exc}"
    # A process that runs the SIP endpoint is ready once its transports listen (and while
    # its SIP thread runs): a SIP load balancer's health check asks OPTIONS, an
    # orchestrator this.
    sip = getattr(request.app.state, "sip", None)
    if sip is not None:
        checks["sip"] = "ok" if sip.listening() else "not listening"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


class MetricsTokenRequired(VoicemailError):
    status_code = 401

    def __init__(self) -> None:
        super().__init__("/metrics needs the metrics token: Authorization: Bearer <token>")
        self.headers = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def _is_loopback(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address(host) if host is not None else None
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client of a dual-stack ("::") listener
    return address is not None and address.is_loopback


def check_metrics_access(settings: Settings, request: Request) -> None:
    """Who may read /metrics on the API port (``voicemail.metrics`` says why): nobody when
    it has its own listen address, the token's holders when one is set, else loopback
    clients only. The client address is uvicorn's: the peer, or the X-Forwarded-For address
    of a trusted proxy (FORWARDED_ALLOW_IPS), so a proxy on this host that forwards the
    public's requests must send X-Forwarded-For (or not forward /metrics)."""
    if settings.metrics_listen is not None:
        raise NotFound("Not found")
    if settings.metrics_token is not None:
        authorization = request.headers.get("authorization")
        if not bearer_token_matches(authorization, settings.metrics_token.get_secret_value()):
            raise MetricsTokenRequired()
        return
    if not _is_loopback(request.client.host if request.client is not None else None):
        raise Forbidden(
            "/metrics answers loopback clients only; set VOICEMAIL_METRICS_TOKEN or "
            "VOICEMAIL_METRICS_LISTEN to scrape it from elsewhere"
        )


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    response_class=Response,
    # 401: VOICEMAIL_METRICS_TOKEN is set and the request lacks it; 403: no token is set
    # and the client is not on loopback; 404: metrics are on VOICEMAIL_METRICS_LISTEN.
    responses={200: {"content": {"text/plain": {}}}, **error_responses(401, 403, 404)},
)
def metrics(request: Request, runtime: RuntimeDep) -> Response:
    # A plain def: FastAPI runs it in a thread, and the queue gauges query the database.
    check_metrics_access(runtime.settings, request)
    body, content_type = runtime.metrics.render()
    return Response(body, media_type=content_type)
