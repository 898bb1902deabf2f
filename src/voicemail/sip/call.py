"""One answered call's audio, both ways, in the media clock's frames
(``../shared/design/sip.md``, *The call*).

``CallAudio`` is a port of PJSIP's conference bridge connected to the caller's stream both
ways. The bridge asks it for a frame to play (``onFrameRequested``) and gives it the
caller's frame (``onFrameReceived``) once per 20 ms tick of the media clock, so everything
is counted in those ticks, never in wall time (a busy machine runs the clock late, not
short):

1. it plays the bot's greeting, then the beep; what the caller says meanwhile is dropped;
2. from the end of the beep, the caller's frames go to the call's ``RecordedCall`` (opened
   when the beep starts: a call that hangs up before the beep leaves nothing);
3. the message ends at the caller's hang-up, or ours: ``#`` (RFC 2833 or SIP INFO), the
   bot's maximum length, ``sip_silence_seconds`` without speech once the caller spoke
   (those three play a short goodbye first), or ``sip_rtp_timeout_seconds`` without RTP
   from the caller (a dead leg; checked by the SIP thread in ``tick``). What was recorded
   is kept whatever ended it.

A hold (the caller's re-INVITE) keeps the call and its recording; while held, neither the
silence nor the RTP timeout runs. The caller's stream may come back on another bridge slot:
``media_changed`` connects it again.

The ports are pooled (``Ports``), never destroyed while the endpoint runs: the media clock
may still be calling into a port the SIP thread lets go of, and a port's Python object
freed meanwhile crashes the process.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import pjsua2 as pj
from sqlalchemy.orm import Session

from voicemail.bots.greetings import greeting_wav
from voicemail.db.models import Bot
from voicemail.live import calls
from voicemail.sip.recording import RecordedCall
from voicemail.storage import Storage

log = logging.getLogger(__name__)

CLOCK_RATE = 8000  # the conference bridge's: G.711's, what a phone call carries
FRAME_MS = 20
FRAME_SAMPLES = CLOCK_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * calls.SAMPLE_WIDTH
FRAMES_PER_SECOND = 1000 // FRAME_MS
SILENT_FRAME = bytes(FRAME_BYTES)
BEEP_HZ = 1000
BEEP_MS = 500
# A frame is speech when its RMS is above this (about -40 dBFS): a line's hiss and a
# codec's comfort noise are below it, a voice well above.
SPEECH_RMS = 330.0
# The goodbye: two falling notes (ms, Hz), then we hang up.
GOODBYE = ((160, 660), (260, 440))
GOODBYE_GRACE_SECONDS = 3.0  # a stalled media clock does not keep the call up for ever
RTP_CHECK_SECONDS = 0.25
CODECS = ("PCMU/8000", "PCMA/8000", "G722/16000")  # what we offer and accept
# The jitter buffer (``configure_jitter_buffer``): its fixed prefetch and its capacity.
JITTER_PREFETCH_MS = 100
JITTER_MAX_MS = 2000
JB_DISCARD_NONE = 0  # pjmedia_jb_discard_algo's PJMEDIA_JB_DISCARD_NONE

# Why a call ended from our side.
END_DTMF = "dtmf"
END_MAX_LENGTH = "max_length"
END_SILENCE = "silence"
END_RTP_TIMEOUT = "rtp_timeout"


def _tone(milliseconds: int, hz: int, level: float = 0.3) -> bytes:
    t = np.arange(CLOCK_RATE * milliseconds // 1000) / CLOCK_RATE
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)  # no clicks
    samples = level * 32767 * np.sin(2 * np.pi * hz * t) * fade
    return samples.astype("<i2").tobytes()


BEEP = _tone(BEEP_MS, BEEP_HZ)
GOODBYE_PCM = b"".join(_tone(ms, hz) for ms, hz in GOODBYE)
assert len(BEEP) % FRAME_BYTES == 0 and len(GOODBYE_PCM) % FRAME_BYTES == 0


def configure_codecs(endpoint: Any) -> None:
    """Offer and accept G.711 (µ-law, A-law) and G.722 only; telephone-event comes with
    them (PJSIP adds it to every SDP)."""
    for codec in endpoint.codecEnum2():
        wanted = any(codec.codecId.startswith(name) for name in CODECS)
        endpoint.codecSetPriority(codec.codecId, 0 if not wanted else 128)


def configure_jitter_buffer(media: Any) -> None:
    """Each call's jitter buffer (``pjsua2.MediaConfig``), set for a recorder rather than a
    conversation: RTP that arrives late or in bursts (a busy sender, network, or our own
    media thread starved of CPU) is kept and played out in order, never dropped to bring
    the delay back down.

    PJSIP's defaults are a phone's: an adaptive prefetch of a frame or two and the
    progressive discard, which drops frames whenever more are queued than the recent
    bursts call for. Under load that made 10-120 ms slips in a recording (frames concealed
    when the buffer ran dry, then frames dropped as the late ones arrived together). Here
    the prefetch is ``JITTER_PREFETCH_MS`` (a burst or stall shorter than that never empties
    the buffer), nothing is discarded (a longer stall adds a gap but loses nothing: the
    buffer keeps the extra delay), and it holds up to ``JITTER_MAX_MS``. The cost is delay:
    the last ``JITTER_PREFETCH_MS`` or so of a message (still queued when the caller hangs
    up) is not recorded, and as much from before the beep's end is.
    """
    media.jbInit = media.jbMinPre = media.jbMaxPre = JITTER_PREFETCH_MS
    media.jbMax = JITTER_MAX_MS
    # SWIG wraps ``jbDiscardAlgo`` (an enum) as an opaque pointer: it is set through
    # pjsua2's own JSON persistence of the config instead.
    document = pj.JsonDocument()
    document.writeObject(media)
    values = json.loads(document.saveString())
    values["MediaConfig"]["jbDiscardAlgo"] = JB_DISCARD_NONE
    document = pj.JsonDocument()
    document.loadString(json.dumps(values))
    document.readObject(media)


def pcm_at_clock_rate(wav: bytes) -> bytes:
    """A WAV's audio as 16-bit mono PCM at the bridge's rate, in whole frames."""
    with av.open(io.BytesIO(wav), "r") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=CLOCK_RATE)
        out = bytearray()
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                out += converted.to_ndarray().tobytes()
        for converted in resampler.resample(None):
            out += converted.to_ndarray().tobytes()
    padding = -len(out) % FRAME_BYTES
    return bytes(out) + bytes(padding)


@dataclass(frozen=True)
class CallPlan:
    """What a bot's calls play and how long they may last."""

    greeting: bytes  # PCM at CLOCK_RATE, whole frames
    max_message_seconds: int


_plans: dict[tuple[str, str | None], bytes] = {}
_plans_lock = threading.Lock()
MAX_CACHED_GREETINGS = 64


def call_plan(session: Session, storage: Storage, bot: Bot) -> CallPlan:
    """The plan of a call to ``bot``; a greeting is decoded once per process."""
    key = (bot.id, bot.greeting_key)
    with _plans_lock:
        greeting = _plans.get(key)
    if greeting is None:
        greeting = pcm_at_clock_rate(greeting_wav(session, storage, bot))
        with _plans_lock:
            if len(_plans) >= MAX_CACHED_GREETINGS:
                _plans.clear()
            _plans[key] = greeting
    return CallPlan(greeting=greeting, max_message_seconds=bot.max_message_seconds)


@dataclass(frozen=True)
class CallLimits:
    silence_seconds: float
    rtp_timeout_seconds: float


class Ports:
    """The bridge ports of a process's calls, made as calls need them and never destroyed:
    a port's Python object must outlive every call of the media clock into it, and a
    port removed from the bridge while the clock runs could still be called."""

    def __init__(self) -> None:
        self.idle: list[CallAudio] = []
        self.made = 0

    def take(self) -> CallAudio:
        if self.idle:
            return self.idle.pop()
        self.made += 1
        return CallAudio(f"vm{self.made}")

    def give_back(self, port: CallAudio) -> None:
        port.release()
        self.idle.append(port)


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


class CallAudio(pj.AudioMediaPort):  # type: ignore[misc]
    """The greeting and beep out, the message in, the goodbye out; see the module."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.call_sid = ""  # the call it serves, for the log
        self.lock = threading.Lock()
        self.active = False  # between ``start`` and ``release``: a call's
        self.closed = True
        audio_format = pj.MediaFormatAudio()
        audio_format.init(pj.PJMEDIA_FORMAT_PCM, CLOCK_RATE, 1, FRAME_MS * 1000, 16, 0, 0)
        self.createPort(name, audio_format)

    def start(
        self,
        plan: CallPlan,
        limits: CallLimits,
        begin: Callable[[], RecordedCall],
        *,
        call_sid: str,
    ) -> None:
        """Serve a new call (the port is idle); ``call_sid`` names it in the log."""
        prompt = plan.greeting + BEEP
        # Made once: a tick of the media clock only hands one over.
        vectors = [
            pj.ByteVector(prompt[start : start + FRAME_BYTES])
            for start in range(0, len(prompt), FRAME_BYTES)
        ]
        with self.lock:
            self.call_sid = call_sid
            self.prompt = vectors
            self.prompt_frames = len(self.prompt)
            self.beep_frame = len(plan.greeting) // FRAME_BYTES
            self.max_frames = plan.max_message_seconds * FRAMES_PER_SECOND
            self.silence_frames = math.ceil(limits.silence_seconds * FRAMES_PER_SECOND)
            self.rtp_timeout = limits.rtp_timeout_seconds
            self.begin = begin
            self.recording: RecordedCall | None = None
            self.played = 0  # frames asked of us (the media clock's ticks)
            self.heard = 0  # frames of the caller's given to us
            self.recorded = 0  # frames of the message
            self.spoke = False
            self.quiet = 0  # frames since the caller last spoke
            self.held = False
            self.closed = False  # the call is over: nothing more is recorded
            self.ending: str | None = None
            self.ended_at = 0.0  # monotonic, when ``ending`` was set
            self.goodbye: list[Any] = []
            self.goodbye_sent = 0
            self.hang_up_now = threading.Event()  # the SIP thread sends our BYE
            self.audio: Any = None  # the caller's stream on the bridge
            self.rtp_packets = -1
            self.rtp_seen_at = time.monotonic()
            self.rtp_checked_at = 0.0
            self.started = time.monotonic()
            self.active = True

    def release(self) -> None:
        """The call is over and forgotten: the port idles until the next call."""
        with self.lock:
            self.active = False
            self.closed = True
            self.prompt, self.goodbye, self.recording = [], [], None
            self.audio = None

    # On the SIP thread -------------------------------------------------------------------

    def media_changed(self, call: Any) -> None:
        """The call's media is (re)negotiated: connect the caller's stream both ways (it may
        be on another slot after a re-INVITE), and note whether the caller holds us."""
        info = call.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            held = media.status in (pj.PJSUA_CALL_MEDIA_REMOTE_HOLD, pj.PJSUA_CALL_MEDIA_NONE)
            if held != self.held:
                log.info(
                    "SIP call held" if held else "SIP call resumed",
                    extra={"call_sid": self.call_sid},
                )
            self.held = held
            if media.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                self.audio = call.getAudioMedia(media.index)
                self.audio.startTransmit(self)
                self.startTransmit(self.audio)
                self.rtp_seen_at = time.monotonic()  # a new stream starts counting afresh
            return

    def dtmf(self, digit: str) -> None:
        """A digit from the caller (RFC 2833 or SIP INFO): ``#`` ends the message."""
        if digit == "#":
            with self.lock:
                self._end(END_DTMF)

    def tick(self, call: Any) -> bool:
        """The SIP thread's turn: checks the caller's RTP; True when we must hang up."""
        now = time.monotonic()
        if self.ending is None and now - self.rtp_checked_at >= RTP_CHECK_SECONDS:
            self.rtp_checked_at = now
            packets = self._rtp_packets(call)
            if packets != self.rtp_packets or self.held:
                self.rtp_packets = packets
                self.rtp_seen_at = now
            elif now - self.rtp_seen_at >= self.rtp_timeout:
                with self.lock:
                    self._end(END_RTP_TIMEOUT)
        if self.hang_up_now.is_set():
            return True
        with self.lock:
            if self.ending is not None and now - self.ended_at > GOODBYE_GRACE_SECONDS:
                return True
        return self.recording is not None and self.recording.done.is_set()

    def _rtp_packets(self, call: Any) -> int:
        try:
            info = call.getInfo()
            for media in info.media:
                if media.type == pj.PJMEDIA_TYPE_AUDIO:
                    return int(call.getStreamStat(media.index).rtcp.rxStat.pkt)
        except Exception:  # no stream (being renegotiated): no news
            return self.rtp_packets
        return self.rtp_packets

    def close(self) -> None:
        """The call is over (either side's BYE): store what was recorded."""
        with self.lock:
            self.closed = True
            recording = self.recording
            log.info(
                "SIP call audio",
                extra={
                    "call_sid": self.call_sid,
                    "played": self.played,
                    "heard": self.heard,
                    "recorded": self.recorded,
                    "wall": round(time.monotonic() - self.started, 3),
                },
            )
        if recording is not None:
            recording.hang_up()

    # On the media clock's thread ---------------------------------------------------------

    def onFrameRequested(self, frame: Any) -> None:
        with self.lock:
            if not self.active:
                frame.type, frame.size = pj.PJMEDIA_FRAME_TYPE_NONE, 0
                return
            position = self.played
            self.played += 1
            if position < self.prompt_frames:
                if position == self.beep_frame and self.recording is None and not self.closed:
                    self.recording = self.begin()  # the voicemail opens as the beep starts
                chunk = self.prompt[position]
            elif self.goodbye_sent < len(self.goodbye):
                chunk = self.goodbye[self.goodbye_sent]
                self.goodbye_sent += 1
                if self.goodbye_sent == len(self.goodbye):
                    self.hang_up_now.set()
            else:
                chunk = None
        if chunk is None:
            frame.type = pj.PJMEDIA_FRAME_TYPE_NONE
            frame.size = 0
            return
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = chunk
        frame.size = FRAME_BYTES

    def onFrameReceived(self, frame: Any) -> None:
        with self.lock:
            if not self.active:
                return
            self.heard += 1
            if self.heard <= self.prompt_frames or self.recording is None:
                return  # over the greeting and the beep
            if self.closed or self.ending is not None:
                return
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size == FRAME_BYTES:
                pcm = bytes(frame.buf)
            else:  # the bridge had nothing from the caller this tick: keep the time
                pcm = SILENT_FRAME
            self.recording.feed(pcm)
            self.recorded += 1
            if self.recorded >= self.max_frames:
                self._end(END_MAX_LENGTH)
            elif not self.held:
                if _rms(pcm) >= SPEECH_RMS:
                    self.spoke, self.quiet = True, 0
                elif self.spoke:
                    self.quiet += 1
                    if self.quiet >= self.silence_frames:
                        self._end(END_SILENCE)

    def _end(self, reason: str) -> None:
        """End the message from our side (the lock held): nothing more is recorded; the
        caller hears the goodbye (not a dead leg), then we hang up."""
        if self.ending is not None or self.closed:
            return
        self.ending, self.ended_at = reason, time.monotonic()
        log.info(
            "SIP call ending",
            extra={
                "call_sid": self.call_sid,
                "reason": reason,
                "seconds": self.recorded / FRAMES_PER_SECOND,
            },
        )
        if reason == END_RTP_TIMEOUT or self.recording is None:
            self.hang_up_now.set()
        else:
            self.goodbye = [
                pj.ByteVector(GOODBYE_PCM[start : start + FRAME_BYTES])
                for start in range(0, len(GOODBYE_PCM), FRAME_BYTES)
            ]
