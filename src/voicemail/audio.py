"""Validate and normalise an uploaded voicemail recording.

``decode_recording`` probes the upload by its content (never its name), decodes it in a
stream with PyAV and writes a mono 16-bit PCM WAV at the source's sample rate, capped at
16 kHz, into a work directory. Anything we cannot or will not accept raises ``BadAudio``
(or ``PayloadTooLarge`` for an oversized file or one too costly to decode) with a message
meant for a person; nothing half-written is left behind.

Why 16 kHz mono: it is what Whisper listens to (it resamples anything else to 16 kHz mono
first), and telephone audio is 8 kHz, which is kept as it is. Storing more would only cost
disk: a 96 KB FLAC of 590 s of 96 kHz silence used to become a 56.6 MB WAV; it is now at
most 590 s x 16 000 x 2 bytes (18.9 MB), and a stored recording is never more than
``max_seconds`` x 32 000 bytes whatever the upload.

Why the decode is bounded on more than the upload's size: what an upload costs is set by
what it decodes to, which a small file can inflate. So the decode refuses, as soon as it
sees them, a sample rate outside ``min_sample_rate``..``max_sample_rate`` (a 1 Hz WAV of 5
samples would otherwise "last" 5 s), more than ``max_channels`` channels, audio past
``max_seconds``, and a decode that has used more than ``cpu_seconds`` of CPU time (this
thread's, checked between packets; ffmpeg is told to decode on this thread only, so the
figure is the decode's whole cost and one decode never takes more than one core).

Why the WAV truncation check reads the RIFF header itself: when the file is seekable,
ffmpeg's WAV demuxer silently clamps a ``data`` chunk that claims more bytes than the
file holds and reports the duration of what is actually there (unless a ``fact`` chunk
says otherwise), so the stream duration PyAV reports cannot reveal a truncated WAV.

Why other containers are checked only when their header states an exact length: for
a VBR MP3 without a Xing/Info/VBRI header ffmpeg *estimates* the duration from the
first frames' bit rate (a 12.7 s file with a quiet start was reported as 112 s), so
a generic "declared vs decoded" comparison would reject valid uploads.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import struct
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import av
import av.error
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from voicemail.errors import BadAudio, PayloadTooLarge

if TYPE_CHECKING:
    from voicemail.settings import Settings

__all__ = ["AudioLimits", "DecodedAudio", "decode_recording", "format_bytes"]

ACCEPTED_FORMATS = "WAV (PCM, µ-law or A-law), MP3, OGG (Opus or Vorbis), FLAC or M4A (AAC)"

# Demuxers ffmpeg may use for an upload. Probing looks at the content only; a format
# not on this list (HLS playlists, images, subtitles, ...) never gets its header read.
_FORMAT_WHITELIST = "wav,mp3,ogg,flac,mov"

# Whisper's rate; 8 kHz telephone audio stays 8 kHz.
MAX_OUTPUT_RATE = 16_000

# A WAV "data" size of 0 or one of these placeholders means "length unknown" (written by
# gateways and tools that stream the file before they know its length: 0xFFFFFFFF by
# ffmpeg and others, 0x7FFFF000 by SoX, ...). Such files are decoded to the end.
_WAV_UNKNOWN_SIZE_FROM = 0x7FFF_F000

# Allowed difference between the length a header declares and what decodes.
_TRUNCATION_MIN_SLACK_SECONDS = 0.5
_TRUNCATION_RELATIVE_SLACK = 0.05

_HASH_CHUNK = 1 << 20
_EPSILON_SECONDS = 1e-6  # float rounding when summing frame durations


@dataclass(frozen=True)
class AudioLimits:
    min_seconds: float = 1.0
    max_seconds: float = 600.0  # of decoded audio
    max_bytes: int = 50 * 1024 * 1024  # of the upload
    min_sample_rate: int = 8_000
    max_sample_rate: int = 192_000
    max_channels: int = 8
    cpu_seconds: float = 10.0  # CPU time one decode may use

    @classmethod
    def from_settings(cls, settings: Settings) -> AudioLimits:
        return cls(
            min_seconds=settings.min_duration_seconds,
            max_seconds=settings.max_duration_seconds,
            max_bytes=settings.max_upload_bytes,
            min_sample_rate=settings.decode_min_sample_rate,
            max_sample_rate=settings.decode_max_sample_rate,
            max_channels=settings.decode_max_channels,
            cpu_seconds=settings.decode_cpu_seconds,
        )


@dataclass(frozen=True)
class DecodedAudio:
    wav_path: Path  # 16-bit PCM mono WAV written by us; the caller owns and deletes it
    sha256: str  # hex sha256 of the WAV file's bytes
    duration_seconds: float  # from the decoded samples, never from a header
    sample_rate: int  # sample rate of the stored WAV
    source_format: str  # "<ffmpeg demuxer>/<codec>", e.g. "wav/pcm_mulaw", "ogg/opus"
    size_bytes: int  # size of the stored WAV


def decode_recording(source: Path, limits: AudioLimits, *, work_dir: Path) -> DecodedAudio:
    """Decode ``source`` into a normalised WAV in ``work_dir``.

    Raises ``PayloadTooLarge`` when the file exceeds ``limits.max_bytes`` or its decode
    ``limits.cpu_seconds``, and ``BadAudio`` for anything that is not acceptable audio. An
    ``OSError`` reading ``source`` itself (missing file, permissions) or writing to
    ``work_dir`` is a server problem and propagates unchanged.
    """
    size = source.stat().st_size
    if size == 0:
        raise BadAudio(f"The recording is empty (0 bytes). Please upload {ACCEPTED_FORMATS}.")
    if size > limits.max_bytes:
        raise PayloadTooLarge(
            f"The recording is too large: {size:,} bytes; the maximum is "
            f"{format_bytes(limits.max_bytes)}."
        )

    budget = _CpuBudget(limits.cpu_seconds)
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=".wav", dir=work_dir)
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as raw:
            decoded = _decode_to_wav(raw, out, limits, budget)
        declared = _declared_seconds(source, decoded)
        if declared is not None and _looks_truncated(declared, decoded.duration_seconds):
            raise BadAudio(
                "The recording is incomplete: its header says it lasts "
                f"{_format_seconds(declared)} s but the file holds only "
                f"{_format_seconds(decoded.duration_seconds)} s of audio. The recording or "
                "the upload was probably cut off; please send the complete file."
            )
        if decoded.duration_seconds < limits.min_seconds:
            raise BadAudio(
                f"The recording is too short: {_format_seconds(decoded.duration_seconds)} s; "
                f"the minimum is {_format_seconds(limits.min_seconds)} s."
            )
        digest, out_size = sha256_and_size(tmp_path)
        final_path = work_dir / f"{secrets.token_hex(16)}.wav"
        tmp_path.replace(final_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return DecodedAudio(
        wav_path=final_path,
        sha256=digest,
        duration_seconds=decoded.duration_seconds,
        sample_rate=decoded.sample_rate,
        source_format=decoded.source_format,
        size_bytes=out_size,
    )


@dataclass(frozen=True)
class _Decoded:
    duration_seconds: float
    sample_rate: int
    source_format: str
    format_name: str  # ffmpeg's demuxer name
    stream_seconds: float | None  # the stream duration ffmpeg reports (may be a guess)


class _AnonymousReader:
    """A read/seek view of a file that hides its name from ffmpeg.

    PyAV passes a file object's ``name`` to ffmpeg, whose probe then also scores the
    extension (a ``.txt`` upload is opened as ANSI art). Without a name, only the
    content counts.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


class _CpuBudget:
    """CPU time this thread may still use for one decode (``time.thread_time``: other
    threads' decodes and requests do not count against it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = time.thread_time() + seconds

    def check(self) -> None:
        if time.thread_time() > self._deadline:
            raise PayloadTooLarge(
                "The recording is too costly to decode: it needed more than "
                f"{_format_seconds(self.seconds)} s of processing time. Please send it at a "
                "lower sample rate or with fewer channels (mono at 8 or 16 kHz is all a "
                "voicemail needs)."
            )


def _check_parameters(sample_rate: int, channels: int, limits: AudioLimits) -> None:
    """Refuse a sample rate or channel count out of bounds (0: not known yet, not checked)."""
    if sample_rate and not limits.min_sample_rate <= sample_rate <= limits.max_sample_rate:
        raise BadAudio(
            f"The recording's sample rate is {sample_rate:,} Hz; accepted are "
            f"{limits.min_sample_rate:,} to {limits.max_sample_rate:,} Hz."
        )
    if channels > limits.max_channels:
        raise BadAudio(
            f"The recording has {channels} channels; at most {limits.max_channels} are "
            "accepted. Please send a mono or stereo recording."
        )


def _decode_to_wav(
    raw: BinaryIO, out: BinaryIO, limits: AudioLimits, budget: _CpuBudget
) -> _Decoded:
    try:
        return _decode_stream(raw, out, limits, budget)
    except (BadAudio, PayloadTooLarge):
        raise
    except (av.error.FFmpegError, ValueError, EOFError, RuntimeError) as exc:
        # FFmpegError covers InvalidDataError, the "format not on whitelist" ArgumentError
        # and ffmpeg's OSError-like errors; ValueError/RuntimeError cover PyAV's own checks
        # (e.g. a frame that no longer matches the resampler).
        raise BadAudio(
            "The recording could not be decoded: it is damaged or not an audio file we "
            f"accept. Please upload {ACCEPTED_FORMATS}."
        ) from exc


def _decode_stream(
    raw: BinaryIO, out: BinaryIO, limits: AudioLimits, budget: _CpuBudget
) -> _Decoded:
    with av.open(
        _AnonymousReader(raw),
        mode="r",
        options={"format_whitelist": _FORMAT_WHITELIST},
        metadata_errors="replace",
    ) as container:
        if not container.streams.audio:
            raise BadAudio(
                "The file contains no audio (it may be a video or an image). "
                f"Please upload {ACCEPTED_FORMATS}."
            )
        stream = container.streams.audio[0]
        codec = stream.codec_context
        source_format = f"{container.format.name}/{codec.codec.canonical_name}"
        # Refused before any decoding when the header already says so; each frame is
        # checked again below (a stream may change its parameters on the way).
        _check_parameters(codec.sample_rate, codec.channels, limits)
        # On this thread only: the CPU budget then measures the whole decode.
        codec.thread_count = 1
        stream_seconds = (
            float(stream.duration * stream.time_base)
            if stream.duration is not None and stream.time_base is not None
            else None
        )

        resampler: AudioResampler | None = None
        writer: wave.Wave_write | None = None
        decoded_seconds = 0.0
        written = 0
        try:
            # Packet by packet (not ``container.decode``) so that the CPU budget is checked
            # between any two packets, also those that decode to no frame.
            for packet in container.demux(stream):
                budget.check()
                for frame in packet.decode():
                    if frame.samples == 0 or frame.sample_rate <= 0:
                        continue
                    _check_parameters(frame.sample_rate, frame.layout.nb_channels, limits)
                    # Stops as soon as the decoded audio passes the bound.
                    decoded_seconds += frame.samples / frame.sample_rate
                    if decoded_seconds > limits.max_seconds + _EPSILON_SECONDS:
                        raise BadAudio(
                            "The recording is too long: the maximum is "
                            f"{_format_limit(limits.max_seconds)}."
                        )
                    if resampler is None or writer is None:
                        rate = min(frame.sample_rate, MAX_OUTPUT_RATE)
                        resampler = AudioResampler(format="s16", layout="mono", rate=rate)
                        writer = wave.open(out, "wb")  # noqa: SIM115 - closed in finally
                        writer.setnchannels(1)
                        writer.setsampwidth(2)
                        writer.setframerate(rate)
                    written += _write_frames(writer, resampler.resample(frame))
            budget.check()
            if resampler is not None and writer is not None:
                written += _write_frames(writer, resampler.resample(None))
        finally:
            if writer is not None:
                writer.close()

        if writer is None or resampler is None:
            raise BadAudio(
                f"The recording contains no decodable audio. Please upload {ACCEPTED_FORMATS}."
            )
        rate = resampler.rate
        return _Decoded(
            duration_seconds=written / rate,
            sample_rate=rate,
            source_format=source_format,
            format_name=container.format.name,
            stream_seconds=stream_seconds,
        )


def _write_frames(writer: wave.Wave_write, frames: list[AudioFrame]) -> int:
    count = 0
    for frame in frames:
        samples = frame.to_ndarray().reshape(-1).astype("<i2", copy=False)
        writer.writeframesraw(samples.tobytes())
        count += int(samples.shape[0])
    return count


def _declared_seconds(source: Path, decoded: _Decoded) -> float | None:
    """The length the source's header states exactly, or None when it states none.

    WAV: the RIFF ``data`` size, read by us (ffmpeg clamps it to the file). FLAC's
    STREAMINFO and MP4's moov state the sample count; an MP3 does only with a
    Xing/Info/VBRI header (otherwise ffmpeg's figure is a bit-rate guess). Ogg has no
    length in its header: ffmpeg reads the last page, i.e. what is there.
    """
    if decoded.format_name == "wav":
        return _wav_declared_seconds(source)
    if decoded.stream_seconds is None or decoded.stream_seconds <= 0:
        return None
    if decoded.format_name in ("flac", "mov,mp4,m4a,3gp,3g2,mj2") or (
        decoded.format_name == "mp3" and _mp3_has_length_header(source)
    ):
        return decoded.stream_seconds
    return None


def _mp3_has_length_header(source: Path) -> bool:
    """Whether the first MPEG frame carries a Xing/Info/VBRI header (frame count)."""
    with source.open("rb") as raw:
        head = raw.read(10)
        offset = 0
        if len(head) == 10 and head[:3] == b"ID3":
            syncsafe = head[6:10]
            offset = 10 + (
                (syncsafe[0] & 0x7F) << 21
                | (syncsafe[1] & 0x7F) << 14
                | (syncsafe[2] & 0x7F) << 7
                | (syncsafe[3] & 0x7F)
            )
            if head[5] & 0x10:  # footer present
                offset += 10
        raw.seek(offset)
        first_frame = raw.read(200)
    if len(first_frame) < 4 or first_frame[0] != 0xFF or first_frame[1] & 0xE0 != 0xE0:
        return False
    return any(tag in first_frame for tag in (b"Xing", b"Info", b"VBRI"))


def _wav_declared_seconds(source: Path) -> float | None:
    """Seconds the RIFF ``data`` chunk declares, or None when unknown/unreadable."""
    with source.open("rb") as fh:
        riff = fh.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None  # RF64/BW64 and RIFX are not checked
        byte_rate = 0
        for _ in range(64):  # a WAV has a handful of chunks before "data"
            header = fh.read(8)
            if len(header) < 8:
                return None
            chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk_id == b"fmt ":
                fmt = fh.read(min(chunk_size, 16))
                if len(fmt) < 12:
                    return None
                byte_rate = struct.unpack("<I", fmt[8:12])[0]
                fh.seek(chunk_size - len(fmt) + (chunk_size & 1), os.SEEK_CUR)
            elif chunk_id == b"data":
                if chunk_size == 0 or chunk_size >= _WAV_UNKNOWN_SIZE_FROM or byte_rate <= 0:
                    return None
                return float(chunk_size / byte_rate)
            else:
                fh.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)
    return None


def _looks_truncated(declared_seconds: float, decoded_seconds: float) -> bool:
    slack = max(_TRUNCATION_MIN_SLACK_SECONDS, _TRUNCATION_RELATIVE_SLACK * declared_seconds)
    return declared_seconds - decoded_seconds > slack


def sha256_and_size(path: Path) -> tuple[str, int]:
    """The file's SHA-256 (hex) and size, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _format_seconds(seconds: float) -> str:
    """1 -> "1", 0.4 -> "0.4", 0.999 -> "0.99" (rounded down: never shows a short clip as
    long enough)."""
    if seconds >= 100:
        return str(math.floor(seconds + _EPSILON_SECONDS))
    text = f"{math.floor(seconds * 100 + _EPSILON_SECONDS) / 100:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _format_limit(seconds: float) -> str:
    """2 -> "2 s", 60 -> "60 s (1 minute)", 600 -> "600 s (10 minutes)"."""
    text = f"{_format_seconds(seconds)} s"
    if seconds >= 60:
        minutes = _format_seconds(seconds / 60)
        text += f" ({minutes} {'minute' if minutes == '1' else 'minutes'})"
    return text


def format_bytes(size: int) -> str:
    """52428800 -> "50 MB (52,428,800 bytes)"; small sizes in bytes only."""
    mib = size / (1024 * 1024)
    if mib < 1:
        return f"{size:,} bytes"
    return f"{mib:.1f}".removesuffix(".0") + f" MB ({size:,} bytes)"
