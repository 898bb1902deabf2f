"""Generated and encoded audio for the tests: tones, WAV and FLAC files, PyAV encodings."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from voicemail.audio import AudioLimits, DecodedAudio, decode_recording

Pcm = npt.NDArray[np.int16]


def write_wav(path: Path, samples: npt.ArrayLike, sample_rate: int = 16_000) -> Path:
    """Write float samples (full scale 1.0) as a mono 16-bit PCM WAV."""
    array = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    pcm = np.round(array * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    return path


def silent_flac(path: Path, seconds: float, sample_rate: int, layout: str = "mono") -> Path:
    """A FLAC file of digital silence: a few hundred bytes a minute whatever its rate and
    channels, so it decodes to far more than it weighs (the abuse the decode limits stop)."""
    channels = av.AudioLayout(layout).nb_channels
    chunk = 65536
    zeros = np.zeros((1, chunk * channels), dtype="<i2")
    total = round(seconds * sample_rate)
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=sample_rate, layout=layout)
        for start in range(0, total, chunk):
            count = min(chunk, total - start)
            frame = av.AudioFrame.from_ndarray(
                zeros[:, : count * channels], format="s16", layout=layout
            )
            frame.sample_rate, frame.pts = sample_rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def tone(seconds: float, rate: int = 8000, frequency: float = 440.0) -> npt.NDArray[np.float64]:
    """A sine at 0.3 of full scale (float samples, for ``write_wav``)."""
    t = np.arange(round(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * frequency * t)


def tone_wav(
    path: Path, seconds: float = 1.5, rate: int = 16_000, frequency: float = 440.0
) -> Path:
    """A WAV of ``tone``; each frequency is a different recording (deposits of the same
    audio are deduplicated)."""
    return write_wav(path, tone(seconds, rate, frequency), rate)


def decoded_tone(folder: Path, frequency: float) -> DecodedAudio:
    """A real decoded recording (1.5 s tone); each frequency is a different recording."""
    folder.mkdir(parents=True, exist_ok=True)
    source = tone_wav(folder / f"{frequency:g}.wav", 1.5, 8000, frequency)
    return decode_recording(source, AudioLimits(), work_dir=folder)


def sine(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> Pcm:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)


def read_clip(path: Path) -> tuple[Pcm, int]:
    """Decode a (PCM or µ-law) mono WAV to int16 samples with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=stream.rate)
        chunks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.int16), stream.rate


def encode(
    path: Path,
    samples: Pcm,
    rate: int,
    *,
    fmt: str,
    codec: str,
    layout: str = "mono",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    qscale: int | None = None,
) -> Path:
    """Encode mono int16 ``samples`` with PyAV (duplicated to both channels for stereo)."""
    channels = 2 if layout == "stereo" else 1
    interleaved = np.repeat(samples, channels).reshape(1, -1)
    source = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=layout)
    source.sample_rate = rate
    source.pts = 0
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as out:
        stream: Any = out.add_stream(codec, rate=rate, layout=layout, options=options or {})
        if qscale is not None:
            stream.codec_context.qscale = qscale
            stream.codec_context.flags |= av.codec.context.Flags.qscale
        resampler = av.AudioResampler(
            format=stream.format.name,
            layout=layout,
            rate=rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        for frame in [*resampler.resample(source), *resampler.resample(None), None]:
            for packet in stream.encode(frame):
                out.mux(packet)
    return path
