"""Waveform peaks for the player: the loudest sample of each of ~400 slices of a recording.

The stored recording is always the 16-bit PCM mono WAV that ``voicemail.audio`` wrote, so it
is read with ``wave`` and numpy, no decoder needed. A stored object never changes (a bleeped
recording is written under a new key), and the key is part of the cache key, so peaks are
computed once per process per object.
"""

from __future__ import annotations

import threading
import wave
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicemail.storage import Storage, local_copy

PEAK_COUNT = 400
_FULL_SCALE = 32768.0
# Read in blocks so a long recording (10 min at 48 kHz is ~55 MB) never sits in memory whole.
_BLOCK_FRAMES = 1 << 20


@dataclass(frozen=True)
class Waveform:
    peaks: tuple[float, ...]  # each 0..1, PEAK_COUNT of them (fewer for very short audio)
    duration: float  # seconds

    def as_json(self) -> dict[str, object]:
        return {"peaks": list(self.peaks), "duration": self.duration}


def peaks_of_wav(path: Path, count: int = PEAK_COUNT) -> Waveform:
    """The peaks of a 16-bit PCM WAV file (the first channel when there are several)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("not a 16-bit PCM recording")
        channels = wav.getnchannels()
        frames = wav.getnframes()
        rate = wav.getframerate()
        slices = max(1, min(count, frames))
        # Slice i holds frames [edges[i], edges[i+1]).
        edges = np.linspace(0, frames, slices + 1).astype(np.int64)
        peaks = np.zeros(slices, dtype=np.float64)
        read = 0
        while read < frames:
            raw = wav.readframes(_BLOCK_FRAMES)
            if not raw:
                break
            block = np.abs(np.frombuffer(raw, dtype="<i2")[::channels].astype(np.int32))
            start, end = read, read + len(block)
            # The slices this block overlaps; the maximum over each overlap.
            first = int(np.searchsorted(edges, start, side="right")) - 1
            last = int(np.searchsorted(edges, end - 1, side="right")) - 1
            for index in range(first, min(last, slices - 1) + 1):
                lo = max(int(edges[index]), start) - start
                hi = min(int(edges[index + 1]), end) - start
                if hi > lo:
                    peaks[index] = max(peaks[index], float(block[lo:hi].max()))
            read = end
    scaled = np.minimum(peaks / _FULL_SCALE, 1.0)
    return Waveform(
        peaks=tuple(round(float(value), 4) for value in scaled),
        duration=frames / rate if rate else 0.0,
    )


_CACHE_SIZE = 256
_cache: OrderedDict[tuple[str, str, str], Waveform] = OrderedDict()
_cache_lock = threading.Lock()


def waveform(storage: Storage, *, voicemail_id: str, key: str, sha256: str) -> Waveform:
    """The recording's peaks, computed on first use and then kept for the process (the
    most recent few hundred: a page reload or a second agent costs nothing)."""
    cache_key = (voicemail_id, key, sha256)
    with _cache_lock:
        found = _cache.get(cache_key)
        if found is not None:
            _cache.move_to_end(cache_key)
            return found
    # Computed outside the lock: two first requests may both compute; both get the same.
    with local_copy(storage, key) as path:
        computed = peaks_of_wav(path)
    with _cache_lock:
        _cache[cache_key] = computed
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return computed
