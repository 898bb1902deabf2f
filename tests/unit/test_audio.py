"""Tests for ``voicemail.audio.decode_recording``.

Audio is generated here (sine waves, noise, silence) or read from the shared folder of
real speech clips (``VOICEMAIL_TEST_AUDIO_DIR``, default ``<repo>/../shared/audio``),
which is never copied into the repository.
"""

from __future__ import annotations

import csv
import hashlib
import os
import struct
import time
import wave
import zlib
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from tests.helpers.audio import Pcm, encode, read_clip, silent_flac, sine
from tests.helpers.clips import audio_dir, missing_audio_reason
from voicemail.audio import AudioLimits, DecodedAudio, decode_recording
from voicemail.errors import BadAudio, PayloadTooLarge, VoicemailError

SPEECH_16K = "original/ps_0870_austen.wav"  # 7.1 s, 16 kHz, 16-bit mono
SPEECH_22K = "original/lj_LJ001-0001.wav"  # 9.655 s, 22.05 kHz, 16-bit mono
TELEPHONE = "telephone/ast_vm-intro.wav"  # 5.654 s, 8 kHz µ-law
DEFAULT = AudioLimits()
MOV = "mov,mp4,m4a,3gp,3g2,mj2"


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def shared_audio() -> Path:
    path = audio_dir()
    if path is None:
        pytest.skip(missing_audio_reason())
    return path


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "in"
    path.mkdir()
    return path


def write_wav(path: Path, samples: Pcm, rate: int) -> Path:
    """16-bit PCM WAV; ``samples`` is (n,) for mono or (n, channels)."""
    frames = samples if samples.ndim == 2 else samples.reshape(-1, 1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.astype("<i2").tobytes())
    return path


def wav_info(result: DecodedAudio) -> tuple[int, int, int, int]:
    """(channels, sample width, rate, frames) of the stored WAV."""
    with wave.open(str(result.wav_path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


def stored_samples(result: DecodedAudio) -> Pcm:
    with wave.open(str(result.wav_path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def assert_normalised(result: DecodedAudio, work_dir: Path, *, rate: int, seconds: float) -> None:
    channels, width, stored_rate, frames = wav_info(result)
    assert (channels, width, stored_rate) == (1, 2, rate)
    assert result.sample_rate == rate
    assert result.duration_seconds == pytest.approx(frames / rate)
    assert result.duration_seconds == pytest.approx(seconds, abs=0.1)
    assert result.wav_path.parent == work_dir
    assert result.wav_path.suffix == ".wav"
    assert list(work_dir.iterdir()) == [result.wav_path], "only the finished WAV is left"
    data = result.wav_path.read_bytes()
    assert result.size_bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()


def assert_rejected(
    source: Path,
    work_dir: Path,
    match: str,
    limits: AudioLimits = DEFAULT,
    error: type[VoicemailError] = BadAudio,
) -> VoicemailError:
    with pytest.raises(error, match=match) as caught:
        decode_recording(source, limits, work_dir=work_dir)
    message = caught.value.message
    assert os.sep not in message, f"no file paths in messages: {message}"
    assert list(work_dir.iterdir()) == [], "a rejected upload must leave nothing behind"
    return caught.value


def wav_data_offset(data: bytes) -> int:
    """Offset of the ``data`` chunk header in a RIFF/WAVE file."""
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        if chunk_id == b"data":
            return offset
        offset += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


def with_data_size(data: bytes, size: int, riff_size: int | None = None) -> bytes:
    patched = bytearray(data)
    struct.pack_into("<I", patched, wav_data_offset(data) + 4, size)
    if riff_size is not None:
        struct.pack_into("<I", patched, 4, riff_size)
    return bytes(patched)


def manifest_rows(shared: Path) -> Iterator[dict[str, str]]:
    with (shared / "manifest.tsv").open(newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh, delimiter="\t")


# ------------------------------------------------------------------- accepted formats

ENCODINGS = [
    # id, container, codec, layout, codec options, expected source_format, output rate
    ("mp3", "mp3", "libmp3lame", "mono", None, "mp3/mp3", None),
    # Opus always decodes at 48 kHz; like anything above 16 kHz it is stored at 16 kHz.
    ("ogg-opus", "ogg", "libopus", "mono", None, "ogg/opus", 16_000),
    # ffmpeg's own Vorbis encoder is experimental and stereo-only: also covers downmixing.
    ("ogg-vorbis", "ogg", "vorbis", "stereo", {"strict": "experimental"}, "ogg/vorbis", None),
    ("flac", "flac", "flac", "mono", None, "flac/flac", None),
    ("m4a-aac", "ipod", "aac", "mono", None, f"{MOV}/aac", None),
    ("wav-alaw", "wav", "pcm_alaw", "mono", None, "wav/pcm_alaw", None),
    ("wav-mulaw", "wav", "pcm_mulaw", "mono", None, "wav/pcm_mulaw", None),
    ("wav-s16", "wav", "pcm_s16le", "stereo", None, "wav/pcm_s16le", None),
    ("wav-s24", "wav", "pcm_s24le", "mono", None, "wav/pcm_s24le", None),
    ("wav-s32", "wav", "pcm_s32le", "mono", None, "wav/pcm_s32le", None),
    ("wav-float", "wav", "pcm_f32le", "mono", None, "wav/pcm_f32le", None),
]


@pytest.mark.parametrize(
    ("container", "codec", "layout", "options", "source_format", "out_rate"),
    [pytest.param(*spec[1:], id=spec[0]) for spec in ENCODINGS],
)
def test_accepts_real_speech_in_each_format(
    shared_audio: Path,
    inputs: Path,
    work_dir: Path,
    container: str,
    codec: str,
    layout: str,
    options: dict[str, str] | None,
    source_format: str,
    out_rate: int | None,
) -> None:
    speech, rate = read_clip(shared_audio / SPEECH_16K)
    # No extension: the format must be found from the content alone.
    source = encode(
        inputs / "upload", speech, rate, fmt=container, codec=codec, layout=layout, options=options
    )

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert result.source_format == source_format
    assert_normalised(result, work_dir, rate=out_rate or rate, seconds=len(speech) / rate)


def test_telephone_mulaw_wav_stays_at_8000_hz(shared_audio: Path, work_dir: Path) -> None:
    source = shared_audio / TELEPHONE
    expected, _ = read_clip(source)

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert result.source_format == "wav/pcm_mulaw"
    assert_normalised(result, work_dir, rate=8000, seconds=5.654)
    np.testing.assert_array_equal(stored_samples(result), expected)


def test_every_shared_clip_keeps_its_duration_at_most_16k(
    shared_audio: Path, work_dir: Path
) -> None:
    rows = list(manifest_rows(shared_audio))
    assert rows
    for row in rows:
        for relative, rate in (
            (row["file"], min(int(row["sample_rate"]), 16_000)),
            (row["telephone_file"], 8000),
        ):
            result = decode_recording(shared_audio / relative, DEFAULT, work_dir=work_dir)
            assert result.sample_rate == rate, relative
            assert result.duration_seconds == pytest.approx(float(row["seconds"]), abs=0.1), (
                relative
            )
            assert wav_info(result)[:2] == (1, 2), relative
            result.wav_path.unlink()
    assert list(work_dir.iterdir()) == []


def test_original_pcm_samples_are_kept_bit_exact(shared_audio: Path, work_dir: Path) -> None:
    # At 16 kHz and below nothing is resampled.
    source = shared_audio / SPEECH_16K
    with wave.open(str(source), "rb") as w:
        original = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert result.source_format == "wav/pcm_s16le"
    np.testing.assert_array_equal(stored_samples(result), original)


def test_detects_format_by_content_not_name(
    shared_audio: Path, inputs: Path, work_dir: Path
) -> None:
    speech, rate = read_clip(shared_audio / SPEECH_16K)
    source = encode(inputs / "message.wav", speech, rate, fmt="flac", codec="flac")

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert result.source_format == "flac/flac"


@pytest.mark.parametrize(
    ("source_rate", "stored_rate"),
    [
        (8000, 8000),
        (11025, 11025),
        (16000, 16000),
        (22050, 16000),
        (44100, 16000),
        (48000, 16000),
        (96000, 16000),
        (192000, 16000),
    ],
)
def test_sample_rate_is_kept_up_to_16k(
    inputs: Path, work_dir: Path, source_rate: int, stored_rate: int
) -> None:
    source = write_wav(inputs / "tone.wav", sine(3.0, source_rate), source_rate)

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert_normalised(result, work_dir, rate=stored_rate, seconds=3.0)
    # A 440 Hz tone survives resampling: it is still the loudest frequency.
    samples = stored_samples(result).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(len(samples), 1 / stored_rate)[spectrum.argmax()] == pytest.approx(
        440, abs=2
    )


def test_stereo_is_downmixed_to_mono(inputs: Path, work_dir: Path) -> None:
    left = sine(3.0, 16000, freq=440, amplitude=0.4)
    right = sine(3.0, 16000, freq=1000, amplitude=0.4)
    source = write_wav(inputs / "stereo.wav", np.stack([left, right], axis=1), 16000)

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert_normalised(result, work_dir, rate=16000, seconds=3.0)
    samples = stored_samples(result).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    freqs = np.fft.rfftfreq(len(samples), 1 / 16000)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([440, 1000], abs=2), "both channels are in the mix"
    assert np.abs(samples).max() < 32767, "no clipping"


def test_identical_stereo_channels_keep_their_level(inputs: Path, work_dir: Path) -> None:
    tone = sine(2.0, 8000, amplitude=0.5)
    source = write_wav(inputs / "stereo.wav", np.stack([tone, tone], axis=1), 8000)

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    peak = np.abs(stored_samples(result).astype(np.int32)).max()
    assert peak == pytest.approx(0.5 * 32767, rel=0.02)


def test_silence_is_accepted(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "silence.wav", np.zeros(5 * 8000, dtype=np.int16), 8000)

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert_normalised(result, work_dir, rate=8000, seconds=5.0)
    assert not stored_samples(result).any()


def test_sha256_depends_only_on_the_audio(inputs: Path, tmp_path: Path, work_dir: Path) -> None:
    first = write_wav(inputs / "a.wav", sine(2.0, 16000), 16000)
    copy = inputs / "b.bin"
    copy.write_bytes(first.read_bytes())
    other = write_wav(inputs / "c.wav", sine(2.0, 16000, freq=880), 16000)
    second_dir = tmp_path / "elsewhere"
    second_dir.mkdir()

    a = decode_recording(first, DEFAULT, work_dir=work_dir)
    b = decode_recording(copy, DEFAULT, work_dir=second_dir)
    c = decode_recording(other, DEFAULT, work_dir=work_dir)

    assert a.wav_path != b.wav_path
    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256


def test_sha256_is_stable_for_lossy_formats(
    shared_audio: Path, inputs: Path, work_dir: Path
) -> None:
    speech, rate = read_clip(shared_audio / SPEECH_16K)
    source = encode(inputs / "speech.mp3", speech, rate, fmt="mp3", codec="libmp3lame")

    first = decode_recording(source, DEFAULT, work_dir=work_dir)
    second = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert first.sha256 == second.sha256
    assert first.wav_path != second.wav_path


# ------------------------------------------------------------------ streaming WAV headers


@pytest.mark.parametrize(
    ("data_size", "riff_size"),
    [
        pytest.param(0xFFFFFFFF, 0xFFFFFFFF, id="data-and-riff-0xFFFFFFFF"),
        pytest.param(0xFFFFFFFF, None, id="data-0xFFFFFFFF"),
        pytest.param(0, 0, id="data-0"),
        pytest.param(0x7FFFF000, None, id="sox-placeholder"),
    ],
)
def test_streaming_wav_with_unknown_length_is_accepted(
    shared_audio: Path, inputs: Path, work_dir: Path, data_size: int, riff_size: int | None
) -> None:
    complete = (shared_audio / SPEECH_22K).read_bytes()
    source = inputs / "streamed.wav"
    source.write_bytes(with_data_size(complete, data_size, riff_size))

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert_normalised(result, work_dir, rate=16000, seconds=9.655)


def test_vbr_mp3_without_length_header_is_not_mistaken_for_truncated(
    shared_audio: Path, inputs: Path, work_dir: Path
) -> None:
    # Quiet start + VBR + no Xing header: ffmpeg guesses the length from the first frames'
    # bit rate (several times too long). That guess must not count as a declared length.
    speech, rate = read_clip(shared_audio / SPEECH_22K)
    padded = np.concatenate([np.zeros(3 * rate, dtype=np.int16), speech])
    source = encode(
        inputs / "vbr",
        padded,
        rate,
        fmt="mp3",
        codec="libmp3lame",
        container_options={"write_xing": "0"},
        qscale=6,
    )
    with av.open(str(source)) as probe:
        stream = probe.streams.audio[0]
        assert stream.duration is not None
        assert stream.time_base is not None
        guessed = float(stream.duration * stream.time_base)
    assert guessed > 2 * len(padded) / rate, "precondition: ffmpeg's estimate is far off"

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert result.duration_seconds == pytest.approx(len(padded) / rate, abs=0.1)


# ------------------------------------------------------------------------- rejections


def test_empty_file(inputs: Path, work_dir: Path) -> None:
    source = inputs / "empty.wav"
    source.touch()
    assert_rejected(source, work_dir, r"empty \(0 bytes\).*WAV.*MP3")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_bytes(inputs: Path, work_dir: Path, seed: int) -> None:
    source = inputs / "noise.mp3"
    source.write_bytes(np.random.default_rng(seed).bytes(64 * 1024))
    assert_rejected(source, work_dir, r"could not be decoded.*WAV.*MP3.*FLAC")


@pytest.mark.parametrize("name", ["notes.txt", "notes.wav"])
def test_text_file(inputs: Path, work_dir: Path, name: str) -> None:
    source = inputs / name
    source.write_text("Hi, please call me back about the invoice.\n" * 200, encoding="utf-8")
    assert_rejected(source, work_dir, "could not be decoded")


def test_hls_playlist_is_not_followed(inputs: Path, work_dir: Path) -> None:
    secret = inputs / "secret.wav"
    write_wav(secret, sine(3.0, 8000), 8000)
    source = inputs / "playlist"
    source.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\nfile://{secret}\n#EXT-X-ENDLIST\n",
        encoding="utf-8",
    )
    assert_rejected(source, work_dir, "could not be decoded")


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    raw = b"".join(b"\x00" + b"\x80" * width * 3 for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_png_image(inputs: Path, work_dir: Path) -> None:
    source = inputs / "voicemail.wav"
    source.write_bytes(_png(32, 32))
    assert_rejected(source, work_dir, "could not be decoded")


def test_video_without_audio(inputs: Path, work_dir: Path) -> None:
    source = inputs / "clip.m4a"
    with av.open(str(source), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            image = np.full((48, 64, 3), i * 8, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert_rejected(source, work_dir, "no audio")


def test_too_short(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "blip.wav", sine(0.5, 8000), 8000)
    assert_rejected(source, work_dir, r"too short: 0\.5 s; the minimum is 1 s")


def test_too_short_after_lossy_encoding(shared_audio: Path, inputs: Path, work_dir: Path) -> None:
    speech, rate = read_clip(shared_audio / SPEECH_16K)
    source = encode(inputs / "blip", speech[: rate * 4 // 10], rate, fmt="ogg", codec="libopus")
    assert_rejected(source, work_dir, r"too short: 0\.\d+ s; the minimum is 1 s")


def test_too_long(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "long.wav", sine(3.0, 8000), 8000)
    limits = AudioLimits(max_seconds=2)
    assert_rejected(source, work_dir, r"too long: the maximum is 2 s", limits=limits)


def test_exactly_max_seconds_is_allowed(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "two.wav", sine(2.0, 44100), 44100)
    result = decode_recording(source, AudioLimits(max_seconds=2), work_dir=work_dir)
    assert result.duration_seconds == pytest.approx(2.0)


def test_too_long_message_gives_minutes(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "long.wav", sine(61.0, 8000), 8000)
    limits = AudioLimits(max_seconds=60)
    assert_rejected(source, work_dir, r"too long: the maximum is 60 s \(1 minute\)", limits=limits)


def test_too_long_real_speech_mp3(shared_audio: Path, inputs: Path, work_dir: Path) -> None:
    speech, rate = read_clip(shared_audio / SPEECH_22K)
    source = encode(inputs / "speech", speech, rate, fmt="mp3", codec="libmp3lame")
    assert_rejected(source, work_dir, "too long", limits=AudioLimits(max_seconds=5))


def test_too_large(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "big.wav", sine(3.0, 8000), 8000)
    limits = AudioLimits(max_bytes=source.stat().st_size - 1)
    error = assert_rejected(
        source, work_dir, r"too large: 48,044 bytes", limits=limits, error=PayloadTooLarge
    )
    assert error.status_code == 413


def test_exactly_max_bytes_is_allowed(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "big.wav", sine(3.0, 8000), 8000)
    limits = AudioLimits(max_bytes=source.stat().st_size)
    assert decode_recording(source, limits, work_dir=work_dir).duration_seconds == 3.0


# ------------------------------------------------------------------------- truncation


def test_real_wav_cut_in_half(shared_audio: Path, inputs: Path, work_dir: Path) -> None:
    complete = (shared_audio / SPEECH_22K).read_bytes()
    source = inputs / "half.wav"
    source.write_bytes(complete[: len(complete) // 2])
    assert_rejected(source, work_dir, r"incomplete: its header says it lasts 9\.6\d s")


def test_telephone_wav_cut_short(shared_audio: Path, inputs: Path, work_dir: Path) -> None:
    complete = (shared_audio / TELEPHONE).read_bytes()
    source = inputs / "cut.wav"
    source.write_bytes(complete[: len(complete) * 2 // 3])
    assert_rejected(source, work_dir, "incomplete")


def test_wav_header_claiming_hours_with_3_seconds_of_data(inputs: Path, work_dir: Path) -> None:
    complete = write_wav(inputs / "tone.wav", sine(3.0, 8000), 8000).read_bytes()
    two_hours = 2 * 3600 * 8000 * 2
    source = inputs / "liar.wav"
    source.write_bytes(with_data_size(complete, two_hours, riff_size=two_hours + 36))
    assert_rejected(source, work_dir, r"header says it lasts 7200 s .* only 3 s of audio")


def test_small_header_mismatch_is_tolerated(inputs: Path, work_dir: Path) -> None:
    # Writers that get the size slightly wrong (within max(0.5 s, 5 %)) are accepted.
    complete = write_wav(inputs / "tone.wav", sine(3.0, 8000), 8000).read_bytes()
    source = inputs / "sloppy.wav"
    source.write_bytes(with_data_size(complete, int(3.4 * 8000 * 2)))
    assert decode_recording(source, DEFAULT, work_dir=work_dir).duration_seconds == 3.0


@pytest.mark.parametrize(
    ("container", "codec", "keep"),
    [
        pytest.param("wav", "pcm_alaw", 0.5, id="alaw-wav-with-fact-chunk"),
        pytest.param("mp3", "libmp3lame", 0.5, id="mp3-with-xing-header"),
        pytest.param("flac", "flac", 0.5, id="flac-mid-frame"),
        pytest.param("ipod", "aac", 0.5, id="m4a"),
    ],
)
def test_truncated_encoded_speech(
    shared_audio: Path, inputs: Path, work_dir: Path, container: str, codec: str, keep: float
) -> None:
    speech, rate = read_clip(shared_audio / SPEECH_22K)
    complete = encode(inputs / "complete", speech, rate, fmt=container, codec=codec).read_bytes()
    source = inputs / "cut"
    source.write_bytes(complete[: int(len(complete) * keep)])
    assert_rejected(source, work_dir, "incomplete|could not be decoded")


def _corrupt(data: bytes, seed: int, *, at: float | None = None, length: int = 2048) -> bytes:
    rng = np.random.default_rng(seed)
    start = int(len(data) * at) if at is not None else int(rng.integers(64, len(data) - length))
    damaged = bytearray(data)
    damaged[start : start + length] = rng.bytes(length)
    return bytes(damaged)


@pytest.mark.parametrize(
    ("container", "codec"),
    [pytest.param("mp3", "libmp3lame", id="mp3"), pytest.param("ipod", "aac", id="m4a-aac")],
)
def test_decoding_error_midway(
    shared_audio: Path, inputs: Path, work_dir: Path, container: str, codec: str
) -> None:
    speech, rate = read_clip(shared_audio / SPEECH_16K)
    complete = encode(inputs / "ok", speech, rate, fmt=container, codec=codec).read_bytes()
    source = inputs / "damaged"
    source.write_bytes(_corrupt(complete, seed=7, at=0.5))
    assert_rejected(source, work_dir, "could not be decoded")


@pytest.mark.parametrize(
    ("container", "codec"),
    [
        pytest.param("flac", "flac", id="flac"),
        pytest.param("mp3", "libmp3lame", id="mp3"),
        pytest.param("ipod", "aac", id="m4a-aac"),
        pytest.param("ogg", "libopus", id="ogg-opus"),
        pytest.param("wav", "pcm_mulaw", id="wav-mulaw"),
    ],
)
def test_damaged_files_give_bad_audio_or_a_result(
    shared_audio: Path, inputs: Path, work_dir: Path, container: str, codec: str
) -> None:
    # Some decoders skip a damaged frame (FLAC, Ogg pages with a bad CRC), others stop with
    # an error (MP3, AAC). Either way nothing but BadAudio escapes, and nothing is left over.
    speech, rate = read_clip(shared_audio / SPEECH_16K)
    complete = encode(inputs / "ok", speech, rate, fmt=container, codec=codec).read_bytes()
    source = inputs / "damaged"
    for seed in range(10):
        source.write_bytes(_corrupt(complete, seed))
        try:
            result = decode_recording(source, DEFAULT, work_dir=work_dir)
        except BadAudio:
            assert list(work_dir.iterdir()) == []
        else:
            assert list(work_dir.iterdir()) == [result.wav_path]
            assert wav_info(result)[:2] == (1, 2)
            result.wav_path.unlink()


# ------------------------------------------------ bounds on what an upload becomes
#
# An upload's cost is what it decodes to: a FLAC of silence weighs a few hundred bytes a
# minute at any rate and channel count.


@pytest.fixture(scope="module")
def costly_flac(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """120 s of 8-channel 192 kHz silence (within every bound, 90 KB) and the CPU seconds
    its full decode takes on this thread."""
    source = silent_flac(tmp_path_factory.mktemp("costly") / "costly.flac", 120, 192_000, "7.1")
    work = tmp_path_factory.mktemp("costly-work")
    started = time.thread_time()
    result = decode_recording(source, DEFAULT, work_dir=work)
    cost = time.thread_time() - started
    assert result.sample_rate == 16_000 and result.duration_seconds == pytest.approx(120)
    assert cost > 0.2, f"precondition: the file costs real CPU to decode ({cost:.3f} s)"
    return source, cost


def test_long_silent_high_rate_flac_is_stored_at_16k(inputs: Path, work_dir: Path) -> None:
    # Observed: a 96 KB FLAC of 590 s of 96 kHz silence was stored as a 56.6 MB WAV.
    source = silent_flac(inputs / "upload", 590, 96_000)
    assert source.stat().st_size < 100_000

    result = decode_recording(source, DEFAULT, work_dir=work_dir)

    assert_normalised(result, work_dir, rate=16_000, seconds=590)
    assert result.size_bytes == 44 + 590 * 16_000 * 2


def test_eight_channel_192k_is_mixed_to_16k_mono(
    costly_flac: tuple[Path, float], work_dir: Path
) -> None:
    source, _ = costly_flac
    result = decode_recording(source, DEFAULT, work_dir=work_dir)
    assert_normalised(result, work_dir, rate=16_000, seconds=120)
    assert result.size_bytes == 44 + 120 * 16_000 * 2


def test_eight_channel_384k_flac_is_refused_before_decoding(inputs: Path, work_dir: Path) -> None:
    # Observed: a 255 KB 8-channel 384 kHz FLAC (590 s) cost 6.3 s of CPU to decode. Its
    # header is enough to refuse it, so 5 s of it show the same.
    source = silent_flac(inputs / "upload", 5, 384_000, "7.1")
    started = time.thread_time()
    assert_rejected(
        source,
        work_dir,
        r"^The recording's sample rate is 384,000 Hz; accepted are 8,000 to 192,000 Hz\.$",
    )
    assert time.thread_time() - started < 0.5


@pytest.mark.parametrize("rate", [1, 100, 4000, 7999])
def test_sample_rate_below_the_minimum_is_refused(inputs: Path, work_dir: Path, rate: int) -> None:
    # Observed: a 1 Hz WAV of 5 samples was accepted as a 5 s voicemail.
    source = write_wav(inputs / "slow.wav", sine(5.0, rate, freq=rate / 4), rate)
    assert_rejected(
        source,
        work_dir,
        rf"^The recording's sample rate is {rate:,} Hz; accepted are 8,000 to 192,000 Hz\.$",
    )


def test_sample_rate_above_the_maximum_is_refused(inputs: Path, work_dir: Path) -> None:
    source = write_wav(inputs / "fast.wav", sine(1.5, 192_001), 192_001)
    assert_rejected(source, work_dir, r"sample rate is 192,001 Hz; accepted are 8,000 to 192,000")


def test_sample_rate_bounds_are_settings(inputs: Path, work_dir: Path) -> None:
    low = write_wav(inputs / "low.wav", sine(2.0, 4000, freq=500), 4000)
    result = decode_recording(low, AudioLimits(min_sample_rate=4000), work_dir=work_dir)
    assert_normalised(result, work_dir, rate=4000, seconds=2.0)
    result.wav_path.unlink()
    high = write_wav(inputs / "high.wav", sine(2.0, 96_000), 96_000)
    assert_rejected(
        high,
        work_dir,
        r"sample rate is 96,000 Hz; accepted are 8,000 to 48,000 Hz",
        limits=AudioLimits(max_sample_rate=48_000),
    )


def test_more_channels_than_the_limit_are_refused(inputs: Path, work_dir: Path) -> None:
    nine = np.stack([sine(2.0, 8000)] * 9, axis=1)
    source = write_wav(inputs / "nine.wav", nine, 8000)
    assert_rejected(
        source,
        work_dir,
        r"^The recording has 9 channels; at most 8 are accepted\. "
        r"Please send a mono or stereo recording\.$",
    )
    stereo = write_wav(inputs / "stereo.wav", np.stack([sine(2.0, 8000)] * 2, axis=1), 8000)
    assert_rejected(
        stereo, work_dir, "has 2 channels; at most 1 are", limits=AudioLimits(max_channels=1)
    )


def test_decode_past_its_cpu_budget_is_refused_at_once(
    costly_flac: tuple[Path, float], work_dir: Path
) -> None:
    source, full_cost = costly_flac
    started = time.thread_time()
    error = assert_rejected(
        source,
        work_dir,
        r"^The recording is too costly to decode: it needed more than 0\.05 s of processing "
        r"time\. Please send it at a lower sample rate or with fewer channels",
        limits=AudioLimits(cpu_seconds=0.05),
        error=PayloadTooLarge,
    )
    assert error.status_code == 413
    # Stopped at its budget, not after decoding everything.
    assert time.thread_time() - started < full_cost / 2


def test_too_long_stops_decoding_at_the_bound(
    costly_flac: tuple[Path, float], work_dir: Path
) -> None:
    source, full_cost = costly_flac
    started = time.thread_time()
    assert_rejected(
        source, work_dir, r"too long: the maximum is 5 s", limits=AudioLimits(max_seconds=5)
    )
    assert time.thread_time() - started < full_cost / 4
