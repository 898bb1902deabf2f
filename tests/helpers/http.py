"""The public API's deposit and fetch over HTTP, against a ``TestClient`` or a running
server's base URL."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.credentials import Credentials

# A TestClient is an httpx.Client; a string is a running server's base URL.
Client = httpx.Client | str


def voicemail_path(bot_id: str) -> str:
    return f"/api/public/bot/{bot_id}/voicemail"


def _send(client: Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    if isinstance(client, str):
        with httpx.Client(base_url=client, timeout=60) as http:
            return http.request(method, url, **kwargs)
    return client.request(method, url, **kwargs)


def post_voicemail(
    client: Client,
    bot_id: str,
    recording: Path | bytes,
    *,
    headers: Mapping[str, str],
    filename: str = "voicemail.wav",
    **fields: str,
) -> httpx.Response:
    """The deposit request as the gateway sends it, whatever the answer; ``fields`` are the
    form's (``sessionId``, ``from``, ...). A file is sent under its own name."""
    if isinstance(recording, Path):
        filename, recording = recording.name, recording.read_bytes()
    return _send(
        client,
        "POST",
        voicemail_path(bot_id),
        headers=dict(headers),
        files={"file": (filename, recording, "audio/wav")},
        data=fields,
    )


def get_voicemail(
    client: Client, bot_id: str, *, headers: Mapping[str, str], **params: str
) -> httpx.Response:
    """The fetch request, whatever the answer; ``params`` are its query (``sessionId``, ...)."""
    return _send(client, "GET", voicemail_path(bot_id), headers=dict(headers), params=params)


def deposit(
    client: Client, creds: Credentials, recording: Path | bytes, session_id: str, **fields: str
) -> dict[str, Any]:
    """Deposit ``recording`` in ``session_id`` with ``creds``; the accepted (202) body."""
    response = post_voicemail(
        client, creds.bot_id, recording, headers=creds.headers(), sessionId=session_id, **fields
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def fetch(client: Client, creds: Credentials, session_id: str, **params: str) -> dict[str, Any]:
    """Fetch ``session_id``'s voicemails with ``creds``; the (200) body."""
    response = get_voicemail(
        client, creds.bot_id, headers=creds.headers(), sessionId=session_id, **params
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
