"""The baseline for bench/api_throughput.py: FastAPI answering a small JSON body, nothing else.

uvicorn bench.bare_app:app --port 8001
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()

BODY = {
    "status": "success",
    "voicemail recording": [],
    "voicemail_recording": [],
    "transcriptions": [],
    "transcriptionStatus": "completed",
}


@app.get("/api/public/bot/{bot_id}/voicemail")
def voicemail(bot_id: str, sessionId: str = "", transcription: str = "") -> dict[str, Any]:
    return BODY
