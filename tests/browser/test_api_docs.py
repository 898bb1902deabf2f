"""The API's documentation pages work in a browser with no internet access: every request
to another host is refused, and Swagger UI and ReDoc still render the API's operations.

ReDoc's footer ("API docs by Redocly") asks cdn.redoc.ly for its logo, an image; offline it
is simply not shown. Nothing the pages need (scripts, styles, fonts, data) comes from
elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers.processes import Service

FETCH_SUMMARY = "Fetch Voicemail Recording (Kore-compatible)"


@pytest.fixture
def offline_page(browser: Any, server: Service) -> Iterator[tuple[Any, list[str]]]:
    """A page whose requests to any host but the server's are aborted; what it asked
    elsewhere is listed, but for decorative images."""
    ours = urlsplit(server.url).netloc
    elsewhere: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).netloc == ours:
            request_route.continue_()
        else:
            if request_route.request.resource_type != "image":
                elsewhere.append(url)
            request_route.abort()

    context = browser.new_context()
    context.route("**/*", route)
    try:
        yield context.new_page(), elsewhere
    finally:
        context.close()


def test_swagger_ui_renders_offline(offline_page: tuple[Any, list[str]], server: Service) -> None:
    page, elsewhere = offline_page
    page.goto(f"{server.url}/docs")
    page.get_by_text(FETCH_SUMMARY).first.wait_for(timeout=15_000)
    assert page.locator(".opblock").count() >= 5  # fetch, deposit, delete, media, webhooks…
    assert elsewhere == []


def test_redoc_renders_offline(offline_page: tuple[Any, list[str]], server: Service) -> None:
    page, elsewhere = offline_page
    page.goto(f"{server.url}/redoc")
    # The operation's own section, not the (collapsed) menu entry of the same name.
    page.get_by_role("heading", name=FETCH_SUMMARY).first.wait_for(timeout=15_000)
    assert elsewhere == []
