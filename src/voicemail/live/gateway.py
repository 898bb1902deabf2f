"""A stand-in for the voice gateway: streams an audio file to the live-deposit WebSocket the
way jambonz ``listen`` does (``voicemail stream-test``, and the tests).

It sends the JSON metadata, then 20 ms binary frames of 16-bit little-endian mono PCM at
real-time pace (or ``speed`` times faster), and closes normally (1000) at the end, as a
gateway does at hang-up. ``drop_after`` instead ends the TCP connection without a close
frame after that many seconds of audio, as a crashed gateway would. ``pause`` sends nothing
for a while mid-call, as a gateway with silence suppression does while the caller is
silent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.audio.resampler import AudioResampler
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from voicemail.live.calls import SAMPLE_WIDTH, call_session_id

SUBPROTOCOL = Subprotocol("audio.jambonz.org")
FRAME_SECONDS = 0.020


def load_pcm(path: Path, sample_rate: int) -> bytes:
    """The file's audio as 16-bit little-endian mono PCM at ``sample_rate`` (PyAV decodes
    and resamples it)."""
    out = bytearray()
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = AudioResampler(format="s16", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for resampled in resampler.resample(frame):
                out.extend(resampled.to_ndarray().astype("<i2").tobytes())
        for resampled in resampler.resample(None):
            out.extend(resampled.to_ndarray().astype("<i2").tobytes())
    return bytes(out)


def basic_auth(client_id: str, client_secret: str) -> dict[str, str]:
    """The header jambonz sends for ``wsAuth``."""
    pair = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def stream_url(base_url: str, bot_id: str) -> str:
    return f"{base_url.rstrip('/')}/api/public/bot/{bot_id}/voicemail/stream"


@dataclass(frozen=True)
class StreamResult:
    session_id: str
    call_sid: str
    seconds_sent: float
    dropped: bool  # the connection was dropped without a close frame (drop_after)
    close_code: int | None  # the server's, when it closed first (e.g. maximum duration)
    close_reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "callSid": self.call_sid,
            "secondsSent": round(self.seconds_sent, 3),
            "dropped": self.dropped,
            "closeCode": self.close_code,
            "closeReason": self.close_reason,
        }


async def stream_pcm(
    url: str,
    pcm: bytes,
    *,
    sample_rate: int,
    headers: dict[str, str],
    bot_id: str,
    call_sid: str | None = None,
    session_id: str | None = None,
    caller_from: str | None = None,
    caller_to: str | None = None,
    speed: float = 1.0,
    drop_after: float | None = None,
    pause: tuple[float, float] | None = None,
    metadata: dict[str, Any] | None = None,
) -> StreamResult:
    """Stream ``pcm`` (16-bit LE mono at ``sample_rate``) to ``url`` as a gateway does;
    ``pause``: (after this many seconds of audio, send nothing for this many seconds)."""
    call_sid = call_sid or str(uuid.uuid4())
    custom = dict(metadata or {})
    if session_id is not None:
        custom["sessionId"] = session_id
    first: dict[str, Any] = {
        "callSid": call_sid,
        "from": caller_from,
        "to": caller_to,
        "sampleRate": sample_rate,
        "mixType": "mono",
        "metadata": custom,
    }
    frame_bytes = round(sample_rate * FRAME_SECONDS) * SAMPLE_WIDTH
    sent = 0
    dropped = False
    close_code: int | None = None
    close_reason: str | None = None
    loop = asyncio.get_running_loop()
    websocket = await connect(
        url, additional_headers=headers, subprotocols=[SUBPROTOCOL], max_size=None
    )
    try:
        await websocket.send(json.dumps(first))
        started = loop.time()
        paused = pause is None
        for index, offset in enumerate(range(0, len(pcm), frame_bytes)):
            if pause is not None and not paused and sent / SAMPLE_WIDTH / sample_rate >= pause[0]:
                await asyncio.sleep(pause[1])
                started += pause[1]
                paused = True
            if drop_after is not None and sent / SAMPLE_WIDTH / sample_rate >= drop_after:
                # No close frame: the server sees the TCP connection end mid-stream. The
                # frames sent so far leave first (an abort would discard them).
                while websocket.transport.get_write_buffer_size():
                    await asyncio.sleep(0.005)
                websocket.transport.close()
                dropped = True
                break
            # Paced against the start, so the stream does not drift behind real time.
            delay = started + index * FRAME_SECONDS / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = pcm[offset : offset + frame_bytes]
            try:
                await websocket.send(chunk)
            except ConnectionClosed:
                break
            sent += len(chunk)
        if not dropped:
            await websocket.close(code=1000, reason="hangup")
    finally:
        if not dropped:
            await websocket.close()
    received = websocket.protocol.close_rcvd
    # The server closed first, or answered our hang-up with a close of its own (it had
    # closed before reading ours, e.g. for the pace).
    server_closed = websocket.protocol.close_rcvd_then_sent
    if not dropped and received is not None and (server_closed or received.code != 1000):
        close_code = received.code
        close_reason = received.reason
    return StreamResult(
        session_id=session_id or call_session_id(bot_id, call_sid),
        call_sid=call_sid,
        seconds_sent=sent / SAMPLE_WIDTH / sample_rate,
        dropped=dropped,
        close_code=close_code,
        close_reason=close_reason,
    )


def stream_file(
    path: Path,
    *,
    base_url: str,
    bot_id: str,
    headers: dict[str, str],
    sample_rate: int = 8000,
    **options: Any,
) -> StreamResult:
    """Decode ``path``, resample it to ``sample_rate`` and stream it (see ``stream_pcm``)."""
    pcm = load_pcm(path, sample_rate)
    return asyncio.run(
        stream_pcm(
            stream_url(base_url, bot_id),
            pcm,
            sample_rate=sample_rate,
            headers=headers,
            bot_id=bot_id,
            **options,
        )
    )
