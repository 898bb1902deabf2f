"""Card and social security numbers bleeped out of the stored audio (issue 12, point 5):
a bot that redacts them has its recordings held (the fetch API says in progress, media URLs
and the inbox's player answer 409) until the worker has stored the transcript and switched
the row to a copy of the recording with the numbers' audio replaced by a 1 kHz tone; the
original is deleted. A live call's recording is bleeped before it is first stored.

The real-model test deposits a clip of real speech with a card number said digit by digit
between two real sentences (``tests.helpers.spoken_digits``) and lets the worker transcribe
it with the real Whisper model (once per test session; the PostgreSQL run reuses the
SQLite run's transcript of the same bytes).
"""

from __future__ import annotations

import io
import json
import math
import wave
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.helpers.credentials import Credentials
from tests.helpers.deposits import deposit_file
from tests.helpers.http import fetch
from tests.helpers.inbox import signed_in, voicemail_row
from tests.helpers.spoken_digits import CachedTranscriber, SpokenNumbers
from voicemail.bots import service as bots
from voicemail.db.models import Job, Voicemail
from voicemail.jobs import service as jobs
from voicemail.jobs.service import LeaseLost
from voicemail.live import calls
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber, Transcriber
from voicemail.transcription.bleep import PAD_SECONDS, TONE_HZ
from voicemail.transcription.engine import Transcript as EngineTranscript
from voicemail.transcription.segments import Word
from voicemail.voicemails import service as voicemails
from voicemail.voicemails.tasks import transcribe_voicemail
from voicemail.worker import build_worker

Samples = npt.NDArray[np.float64]


def configure(runtime: Runtime, bot_id: str, **changes: Any) -> None:
    with runtime.sessions.begin() as session:
        bots.configure_bot(session, bot_id=bot_id, **changes)


def samples_of(data: bytes) -> tuple[Samples, int]:
    with wave.open(io.BytesIO(data), "rb") as handle:
        assert (handle.getnchannels(), handle.getsampwidth()) == (1, 2)
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), "<i2")
        return pcm.astype(np.float64) / 32767, handle.getframerate()


def dbfs(samples: Samples) -> float:
    return 20 * math.log10(max(1e-9, math.sqrt(float(np.mean(np.square(samples))))))


def level_at(samples: Samples, rate: int, hz: float) -> float:
    """The share of the signal's energy within 50 Hz of ``hz``."""
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(freqs - hz) <= 50].sum() / spectrum.sum())


def signed_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def assert_held(
    client: TestClient, inbox: TestClient, creds: Credentials, runtime: Runtime, vm: Voicemail
) -> None:
    """Nobody can hear ``vm`` yet: the fetch API reports it in progress without its entry,
    its signed URL and the inbox's audio and peaks answer 409 in the API's envelope."""
    body = fetch(client, creds, vm.session.session_id, transcription="true")
    assert body["status"] == "media_in_progress"
    assert body["voicemail recording"] == body["voicemail_recording"] == []
    assert body["transcriptionStatus"] == "pending"
    with runtime.sessions() as session:
        loaded = session.get(Voicemail, vm.id)
        assert loaded is not None
        url = runtime.signer.url_for(loaded, epoch=0)
    for answer in (
        client.get(signed_path(url)),
        client.head(signed_path(url)),
        client.get(signed_path(url), headers={"Range": "bytes=0-99"}),
        inbox.get(f"/inbox/voicemails/{vm.id}/audio"),
        inbox.get(f"/inbox/voicemails/{vm.id}/waveform.json"),
    ):
        assert answer.status_code == 409, answer.text
        if answer.request.method != "HEAD":
            (error,) = answer.json()["errors"]
            assert error["code"] == 409 and "not available yet" in error["msg"]
    page = inbox.get(f"/inbox/voicemails/{vm.id}")
    assert 'id="audio-held"' in page.text and 'id="player"' not in page.text
    listed = client.get(
        f"/api/public/bot/{creds.bot_id}/voicemails", headers=creds.headers()
    ).json()["voicemails"]
    assert [
        item["recordingReady"] for item in listed if item["sessionId"] == vm.session.session_id
    ] == [False]


def deposit(runtime: Runtime, creds: Credentials, wav: Path, work: Path, session: str) -> Voicemail:
    deposited = deposit_file(runtime, creds.bot_id, wav, work=work, session_id=session)
    with runtime.sessions() as db:
        voicemail = db.get(Voicemail, deposited.voicemail.id)
        assert voicemail is not None
        _ = voicemail.session, voicemail.bot
        db.expunge_all()
    return voicemail


# -- the real model on real speech ------------------------------------------------------


@pytest.fixture
def transcriber(request: pytest.FixtureRequest) -> Transcriber:
    """The real model (run once per recording) for the tests marked ``model``; else a fake."""
    if request.node.get_closest_marker("model") is not None:
        real: CachedTranscriber = request.getfixturevalue("whisper_once")
        return real
    return FakeTranscriber()


@pytest.mark.model
def test_real_card_number_is_bleeped_in_the_stored_audio(
    client: TestClient,
    inbox: TestClient,
    creds: Credentials,
    runtime: Runtime,
    spoken_numbers: SpokenNumbers,
    tmp_path: Path,
) -> None:
    configure(runtime, creds.bot_id, redact=["card"])
    signed_in(inbox, runtime, "supervisor")
    wav, spoken = spoken_numbers.clip("card_then_words")
    vm = deposit(runtime, creds, wav, tmp_path / "w", "67aa38026e199c8f470e0d01")
    original_key = vm.storage_key
    original, rate = samples_of(runtime.storage.read_bytes(original_key))

    assert_held(client, inbox, creds, runtime, vm)

    assert build_worker(runtime, housekeeping=False).run_once()  # the real model

    after = voicemail_row(runtime, vm.id)
    assert after.storage_key != original_key
    assert not runtime.storage.exists(original_key)  # the original is not kept
    body = fetch(client, creds, vm.session.session_id, transcription="true", words="true")
    assert body["status"] == "success"
    (recording,) = body["voicemail recording"]
    served = client.get(signed_path(recording["fileUrl"]))
    assert served.status_code == 200
    assert served.content == runtime.storage.read_bytes(after.storage_key)
    bleeped, served_rate = samples_of(served.content)
    assert served_rate == rate and len(bleeped) == len(original)

    (doc,) = body["transcriptions"]
    assert doc["redacted"] == ["card"]
    words = doc["words"]
    (index,) = [i for i, w in enumerate(words) if "[card]" in w["word"]]
    before, after_word = words[index - 1], words[index + 1]
    # The span: from the end of the word before the number to the start of the word after,
    # padded; it covers every spoken digit, wherever Whisper timed them.
    start = before["end"] - PAD_SECONDS
    end = after_word["start"] + PAD_SECONDS
    assert start <= spoken.digits_start and end >= spoken.digits_end, (before, after_word)
    first, last = math.floor(start * rate), math.ceil(end * rate)

    # Over the span: the tone, and nothing else.
    span = bleeped[first:last]
    assert level_at(span, rate, TONE_HZ) > 0.99
    assert dbfs(span[int(0.01 * rate) : -int(0.01 * rate)]) == pytest.approx(-15.0, abs=0.1)
    digits = bleeped[int(spoken.digits_start * rate) : int(spoken.digits_end * rate)]
    assert level_at(digits, rate, TONE_HZ) > 0.99
    # Outside it: the speech before and after, sample for sample.
    assert np.array_equal(bleeped[:first], original[:first])
    assert np.array_equal(bleeped[last:], original[last:])
    assert spoken.tail_start is not None and last < len(original)
    assert dbfs(bleeped[: int(spoken.lead_in_end * rate)]) > -35  # real speech, kept
    assert dbfs(bleeped[last:]) > -35
    assert level_at(original[first:last], rate, TONE_HZ) < 0.2  # it was speech

    # The inbox's player gets the bleeped recording too.
    assert inbox.get(f"/inbox/voicemails/{vm.id}/audio").content == served.content


# -- without the model --------------------------------------------------------------------

CARD_TEXT = "My card is 4111 1111 1111 1111 thanks bye"


@pytest.fixture
def fake(runtime: Runtime) -> FakeTranscriber:
    assert isinstance(runtime.transcriber, FakeTranscriber)
    return runtime.transcriber


@pytest.mark.usefixtures("fake")
def test_a_bot_that_does_not_bleep_is_served_at_once(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    speech_clip: Path,
    tmp_path: Path,
) -> None:
    configure(runtime, creds.bot_id, redact=["email"])
    vm = deposit(runtime, creds, speech_clip, tmp_path / "w", "67aa38026e199c8f470e0d02")
    body = fetch(client, creds, vm.session.session_id)
    assert body["status"] == "success"
    (recording,) = body["voicemail recording"]
    before = client.get(signed_path(recording["fileUrl"]))
    assert before.status_code == 200
    assert build_worker(runtime, housekeeping=False).run_once()
    assert voicemail_row(runtime, vm.id).storage_key == vm.storage_key
    assert client.get(signed_path(recording["fileUrl"])).content == before.content


def test_held_until_transcribed_and_not_bleeped_without_a_number(
    client: TestClient,
    inbox: TestClient,
    creds: Credentials,
    runtime: Runtime,
    fake: FakeTranscriber,
    speech_clip: Path,
    tmp_path: Path,
) -> None:
    configure(runtime, creds.bot_id, redact=["ssn"])
    signed_in(inbox, runtime, "supervisor")
    fake.text = "Please call me back about my order, thanks."
    vm = deposit(runtime, creds, speech_clip, tmp_path / "w", "67aa38026e199c8f470e0d03")
    stored = runtime.storage.read_bytes(vm.storage_key)
    assert_held(client, inbox, creds, runtime, vm)
    assert build_worker(runtime, housekeeping=False).run_once()
    assert voicemail_row(runtime, vm.id).storage_key == vm.storage_key  # nothing to bleep
    (recording,) = fetch(client, creds, vm.session.session_id)["voicemail recording"]
    assert client.get(signed_path(recording["fileUrl"])).content == stored
    assert inbox.get(f"/inbox/voicemails/{vm.id}/audio").content == stored
    assert inbox.get(f"/inbox/voicemails/{vm.id}/waveform.json").status_code == 200
    assert 'id="player"' in inbox.get(f"/inbox/voicemails/{vm.id}").text


def test_a_lost_lease_keeps_the_original_and_leaves_no_copy(
    settings: Settings,
    creds: Credentials,
    runtime: Runtime,
    fake: FakeTranscriber,
    speech_clip: Path,
    tmp_path: Path,
) -> None:
    """The bleeped copy is stored before the transcript commits; a worker that finds its
    lease gone then deletes its copy, and the original stays the served one (held) for the
    worker that now owns the job."""
    configure(runtime, creds.bot_id, redact=["card"])
    fake.text = CARD_TEXT
    vm = deposit(runtime, creds, speech_clip, tmp_path / "w", "67aa38026e199c8f470e0d04")
    with runtime.sessions.begin() as session:
        job = jobs.claim_next_job(session, worker_id="w1", lease_seconds=60)
        assert job is not None
    # Another worker takes the job over while the model runs.
    original_transcribe = fake.transcribe

    def steal(*args: Any, **kwargs: Any) -> EngineTranscript:
        with runtime.sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job.id).values(worker_id="w2"))
        return original_transcribe(*args, **kwargs)

    fake.transcribe = steal  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        transcribe_voicemail(
            job,
            sessions=runtime.sessions,
            storage=runtime.storage,
            transcriber=fake,
            scratch=settings.scratch_dir,
        )
    prefix = vm.storage_key.removesuffix(".wav")
    assert [o.key for o in runtime.storage.iter_objects(prefix)] == [vm.storage_key]
    after = voicemail_row(runtime, vm.id)
    assert after.storage_key == vm.storage_key


def test_the_sweep_knows_bleeped_copies(
    creds: Credentials, runtime: Runtime, fake: FakeTranscriber, speech_clip: Path, tmp_path: Path
) -> None:
    """After a crash between storing the copy and committing (or between committing and
    deleting the original), the orphan sweep removes whichever object no row names."""
    configure(runtime, creds.bot_id, redact=["card"])
    fake.text = CARD_TEXT
    vm = deposit(runtime, creds, speech_clip, tmp_path / "w", "67aa38026e199c8f470e0d05")
    stray = voicemails.bleeped_key(vm.storage_key)
    runtime.storage.put_file(stray, speech_clip)
    assert build_worker(runtime, housekeeping=False).run_once()
    served = voicemail_row(runtime, vm.id).storage_key
    assert served.startswith(vm.storage_key.removesuffix(".wav") + "/redacted-")
    assert voicemails.bleeped_key(served) != served
    assert voicemails.bleeped_key(served).rsplit("/", 1)[0] == served.rsplit("/", 1)[0]
    removed = voicemails.sweep_orphan_recordings(
        runtime.sessions, runtime.storage, older_than=0, now=4e9
    )
    assert removed == 1
    assert not runtime.storage.exists(stray) and runtime.storage.exists(served)


# -- a live call ----------------------------------------------------------------------------

RATE = 8000


def test_a_live_call_is_bleeped_before_it_is_stored(
    settings: Settings, creds: Credentials, runtime: Runtime
) -> None:
    configure(runtime, creds.bot_id, redact=["card"])
    rng = np.random.default_rng(3)
    noise = np.round(rng.uniform(-8000, 8000, RATE * 6)).astype("<i2")
    meta = calls.parse_metadata(json.dumps({"callSid": "call-bleep", "sampleRate": RATE}))
    with runtime.sessions.begin() as session:
        call = calls.open_connection(session, bot_id=creds.bot_id, meta=meta)
    words = [
        Word("My", 0.2, 0.4, 0.9),
        Word("card", 0.5, 0.8, 0.9),
        Word("is", 0.9, 1.0, 0.9),
        Word("4111111111111111.", 1.5, 3.5, 0.9),
        Word("Thanks.", 4.0, 4.4, 0.9),
    ]
    text = " ".join(w.word for w in words)
    result = EngineTranscript(text, "en", 1.0, words, [], False, 6.0, "fake")
    transcript = calls.transcript_json(result, processing_seconds=0.1)
    # Two parts after the connection's marker (seq 1); the last carries the transcript of
    # both, as a connection's last part does.
    for chunk, text_of, covers in (
        (noise[: RATE * 3], None, ()),
        (noise[RATE * 3 :], transcript, (2,)),
    ):
        calls.store_part(
            runtime.sessions,
            storage=runtime.storage,
            call=call,
            pcm=chunk.tobytes(),
            scratch_dir=settings.scratch_dir,
            transcript=text_of,
            covers=covers,
        )
    done = runtime.call_finalizer.finalize(call.voicemail_id)
    assert done is not None and done.transcribed
    vm = voicemail_row(runtime, call.voicemail_id)
    prefix = vm.storage_key.removesuffix(".wav")
    # The parts, the only other copy of the original, are gone.
    assert [o.key for o in runtime.storage.iter_objects(prefix)] == [vm.storage_key]
    stored, rate = samples_of(runtime.storage.read_bytes(vm.storage_key))
    original = noise.astype(np.float64) / 32767
    first, last = math.floor((1.0 - PAD_SECONDS) * rate), math.ceil((4.0 + PAD_SECONDS) * rate)
    assert np.array_equal(stored[:first], original[:first])
    assert np.array_equal(stored[last:], original[last:])
    assert level_at(stored[first:last], rate, TONE_HZ) > 0.99
    with runtime.sessions() as session:
        loaded = session.get(Voicemail, vm.id)
        assert loaded is not None and loaded.transcript is not None
        assert loaded.transcript.redacted == ["card"]
