"""``/docs`` (Swagger UI) and ``/redoc`` served from packaged assets.

FastAPI's defaults load Swagger UI and ReDoc from a CDN, so on an install without internet
access (most of ours: the service runs beside a PBX) the pages stay blank. The assets come
from the ``fastapi-offline`` package (MIT, pinned), served under ``/docs/assets``; the pages
load nothing from another host (no Google Fonts either).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Serve the API's documentation pages; ``app`` must be made with ``docs_url=None``
    and ``redoc_url=None``, so that FastAPI's CDN-backed ones are not routed first.

    The pages are module functions that read the app from the request, not closures over
    ``app``: FastAPI keeps every endpoint it classifies in module-level caches (4096
    entries each, keyed by the function), so two closures per app kept up to 2048 apps
    alive in a process that builds many, as a test run does: tens of millions of objects,
    over which every full garbage collection then took seconds.
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)


def _openapi_url(app: FastAPI) -> str:
    return app.openapi_url or "/openapi.json"


async def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return get_swagger_ui_html(
        openapi_url=_openapi_url(app),
        title=f"{app.title} API",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
    )


async def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return get_redoc_html(
        openapi_url=_openapi_url(app),
        title=f"{app.title} API",
        redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )
