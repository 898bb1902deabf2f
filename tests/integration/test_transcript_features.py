"""Transcripts users can act on, end to end on a real database: per-bot settings from the
CLI, the bot's post-processing (call-back number, redaction) applied when a transcript is
stored, and the fields the fetch API returns.

The real-model tests speak numbers built from real spoken digits of the corpus
(``tests.helpers.spoken_digits``). The model runs once per clip for the session; each
database then stores that real transcript.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.helpers.cli import invoke_cli, ok_json
from tests.helpers.credentials import Credentials
from tests.helpers.deposits import deposit_file
from tests.helpers.http import fetch
from tests.helpers.spoken_digits import CLIPS, SpokenNumbers
from voicemail.audit import service as audit
from voicemail.bots import service as bots
from voicemail.db.models import AuditEntry, Voicemail
from voicemail.runtime import Runtime
from voicemail.settings import Settings
from voicemail.transcription import FakeTranscriber
from voicemail.transcription.digits import digit_runs
from voicemail.transcription.engine import Transcript as EngineTranscript
from voicemail.voicemails.tasks import save_transcript
from voicemail.worker import build_worker

MESSAGE = (
    "Hi, it's Sam from Acme. Call me back at 415-555-0134. My card is 4111 1111 1111 1111 "
    "and my email is sam dot jones at example dot com."
)
SPANISH = (
    "Hola, soy Ana de Acme. Llámame al seis uno dos, treinta y cuatro, cincuenta y seis, "
    "setenta y ocho. Mi tarjeta es cuatro cinco cinco seis, siete tres siete cinco, ocho seis "
    "ocho nueve, nueve ocho cinco cinco, y mi correo es anna@firma.pl."
)


@pytest.fixture
def transcriber() -> FakeTranscriber:
    return FakeTranscriber(text=MESSAGE, language="en", language_probability=0.97)


# The fetch query for a transcript with its words.
WITH_WORDS = {"transcription": "true", "words": "true"}


# -- the CLI ----------------------------------------------------------------------------


def test_bots_configure(settings: Settings, runtime: Runtime, creds: Credentials) -> None:
    result = invoke_cli(
        settings,
        *("bots", "configure", creds.bot_id, "--retention-days", "30"),
        *("--languages", "en, ES", "--vocabulary", "Acme,WidgetPro", "--redact", "card,email"),
        *("--region", "us"),
        "--json",
    )
    configured = ok_json(result)
    assert configured == {
        "botId": creds.bot_id,
        "name": "Support line",
        "retentionDays": 30,
        "languages": ["en", "es"],
        "vocabulary": ["Acme", "WidgetPro"],
        "redact": ["card", "email"],
        "region": "US",
        "mailboxes": [],
        "greeting": "default",
        "maxMessageSeconds": 180,
    }
    assert result.stderr == ""  # English and Spanish numbers are both read
    # Only what is given changes; "" clears.
    cleared = ok_json(
        invoke_cli(settings, "bots", "configure", creds.bot_id, "--languages", "", "--json")
    )
    assert cleared == {**configured, "languages": []}
    listed = ok_json(invoke_cli(settings, "bots", "list", "--json"))
    assert listed["bots"] == [{**cleared, "accountId": creds.account_id}]

    bad = invoke_cli(settings, "bots", "configure", creds.bot_id, "--redact", "card,phone")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr.strip() == "error: Cannot redact 'phone'; choose from card, ssn, email"
    bad = invoke_cli(settings, "bots", "configure", creds.bot_id, "--region", "XX")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr.strip() == (
        "error: Unknown region 'XX': use an ISO 3166 country code such as US, GB, ES"
    )

    with runtime.sessions() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == audit.BOT_CONFIGURE)
        ).all()
        bot = bots.get_bot(session, bot_id=creds.bot_id)
        assert bot.languages == [] and bot.redact == ["card", "email"] and bot.region == "US"
    assert [(e.actor, e.bot_id) for e in entries] == [("cli", creds.bot_id)] * 2
    assert [e.detail["languages"] for e in entries] == [["en", "es"], []]  # the new settings
    assert [e.detail["region"] for e in entries] == ["US", "US"]


def test_bots_configure_region_and_languages_without_spoken_numbers(
    settings: Settings, creds: Credentials
) -> None:
    result = invoke_cli(
        settings, "bots", "configure", creds.bot_id, "--languages", "en,ja,fr", "--json"
    )
    assert ok_json(result)["region"] is None
    # Japanese numbers in words are not read: the admin is told.
    assert result.stderr.strip() == (
        "note: numbers spoken in ja are not read as digits; redaction and the call-back "
        "number see only the digits Whisper writes"
    )
    gb = ok_json(
        invoke_cli(settings, "bots", "configure", creds.bot_id, "--region", "gb", "--json")
    )
    assert (gb["region"], gb["languages"]) == ("GB", ["en", "ja", "fr"])
    cleared = ok_json(
        invoke_cli(settings, "bots", "configure", creds.bot_id, "--region", "", "--json")
    )
    assert cleared["region"] is None


# -- post-processing in the pipeline (the fake transcriber) -----------------------------


def configure(runtime: Runtime, bot_id: str, **changes: Any) -> None:
    with runtime.sessions.begin() as session:
        bots.configure_bot(session, bot_id=bot_id, **changes)


def test_bot_settings_reach_the_transcriber_and_the_stored_transcript(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    transcriber: FakeTranscriber,
    speech_clip: Path,
    tmp_path: Path,
) -> None:
    configure(
        runtime,
        creds.bot_id,
        languages=["es", "fr"],
        vocabulary=["Acme"],
        redact=["card", "ssn", "email"],
        region="US",
    )
    deposit_file(
        runtime,
        creds.bot_id,
        speech_clip,
        work=tmp_path / "w",
        session_id="67aa38026e199c8f470e0c01",
    )
    assert build_worker(runtime).run_once()

    (call,) = transcriber.calls
    assert (call.languages, call.vocabulary) == (("es", "fr"), ("Acme",))
    doc = fetch(client, creds, "67aa38026e199c8f470e0c01", **WITH_WORDS)["transcriptions"][0]
    text = doc["components"][0]["data"]["text"]
    assert text == (
        "Hi, it's Sam from Acme. Call me back at 415-555-0134. My card is [card] "
        "and my email is [email]."
    )
    assert doc["callbackNumber"] == "+14155550134"  # E.164, in the bot's region
    assert doc["redacted"] == ["card", "email"]
    # The fake's own "en" is not allowed: an allowed language, with the low probability a
    # detector would give it.
    assert (doc["language"], doc["lang"], doc["languageProbability"]) == ("es", "es", 0.0)
    words = [w["word"] for w in doc["words"]]
    assert "[card]" in words and "[email]." in words
    assert " ".join(words) == text
    card = doc["words"][words.index("[card]")]
    assert (card["start"], card["end"]) == (
        round(0.4 * 13, 3),
        round(0.4 * 16 + 0.35, 3),
    )  # words 13-16


def test_without_settings_nothing_is_redacted(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    transcriber: FakeTranscriber,
    speech_clip: Path,
    tmp_path: Path,
) -> None:
    transcriber.text = "Hello, nothing to call back on. Card 4111 1111 1111 1111."
    deposit_file(
        runtime,
        creds.bot_id,
        speech_clip,
        work=tmp_path / "w",
        session_id="67aa38026e199c8f470e0c02",
    )
    assert build_worker(runtime).run_once()
    doc = fetch(client, creds, "67aa38026e199c8f470e0c02", **WITH_WORDS)["transcriptions"][0]
    assert doc["components"][0]["data"]["text"] == transcriber.text
    assert (doc["callbackNumber"], doc["redacted"]) == (None, [])
    assert (doc["language"], doc["languageProbability"]) == ("en", 0.97)


def test_spanish_transcript_is_redacted_and_its_callback_number_found(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    transcriber: FakeTranscriber,
    speech_clip: Path,
    tmp_path: Path,
) -> None:
    transcriber.text, transcriber.language = SPANISH, "es"
    configure(runtime, creds.bot_id, languages=["es", "en"], redact=["card", "email"], region="ES")
    deposit_file(
        runtime,
        creds.bot_id,
        speech_clip,
        work=tmp_path / "w",
        session_id="67aa38026e199c8f470e0c05",
        caller_from="+34915550000",
    )
    assert build_worker(runtime).run_once()
    doc = fetch(client, creds, "67aa38026e199c8f470e0c05", **WITH_WORDS)["transcriptions"][0]
    assert doc["components"][0]["data"]["text"] == (
        "Hola, soy Ana de Acme. Llámame al seis uno dos, treinta y cuatro, cincuenta y seis, "
        "setenta y ocho. Mi tarjeta es [card], y mi correo es [email]."
    )
    assert (doc["callbackNumber"], doc["redacted"], doc["language"]) == (
        "+34612345678",
        ["card", "email"],
        "es",
    )
    assert doc["callerNumber"] == "+34915550000"  # the caller's own number as the gateway sent it
    words = [w["word"] for w in doc["words"]]
    assert "[card]," in words and "[email]." in words
    assert not any(w in words for w in ("cuatro", "nueve", "anna@firma.pl."))


@pytest.mark.parametrize(
    ("region", "caller", "expected"),
    [
        ("GB", None, "+442079460958"),  # the bot's region
        (None, "+44 7911 123456", "+442079460958"),  # no region: the caller's country
        (None, "02079460958", None),  # neither: no country to read it in
        ("US", None, None),  # not a valid number in the US: not offered
    ],
)
def test_national_callback_number_in_e164(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    transcriber: FakeTranscriber,
    speech_clip: Path,
    tmp_path: Path,
    region: str | None,
    caller: str | None,
    expected: str | None,
) -> None:
    transcriber.text = "Hello, it's Tom. Please ring me back on 020 7946 0958. Cheers."
    if region:
        configure(runtime, creds.bot_id, region=region)
    deposit_file(
        runtime,
        creds.bot_id,
        speech_clip,
        work=tmp_path / "w",
        session_id="67aa38026e199c8f470e0c06",
        caller_from=caller,
    )
    assert build_worker(runtime).run_once()
    doc = fetch(client, creds, "67aa38026e199c8f470e0c06", **WITH_WORDS)["transcriptions"][0]
    assert doc["callbackNumber"] == expected
    assert doc["callerNumber"] == caller  # stored and echoed as the gateway sent it


# -- the real model on real spoken digits -----------------------------------------------


@pytest.fixture
def spoken(spoken_numbers: SpokenNumbers) -> Callable[[str], tuple[Path, EngineTranscript]]:
    """A clip of ``tests.helpers.spoken_digits`` and its real transcript (once a session)."""
    return spoken_numbers.transcript


def store_real(
    runtime: Runtime, bot_id: str, wav: Path, result: EngineTranscript, work: Path, session: str
) -> None:
    """Deposit ``wav`` and store the real transcript as the worker would."""
    deposited = deposit_file(runtime, bot_id, wav, work=work, session_id=session)
    with runtime.sessions.begin() as db:
        voicemail = db.get(Voicemail, deposited.voicemail.id)
        assert voicemail is not None
        save_transcript(db, voicemail, result, processing_seconds=1.0)


@pytest.mark.model
def test_real_spoken_phone_number_is_the_callback_number(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    spoken: Callable[[str], tuple[Path, EngineTranscript]],
    tmp_path: Path,
) -> None:
    """Whisper writes the ten digits after "Nobody is available ... moment." (no cue here:
    the longest plausible run is taken, and given in E.164 in the bot's region)."""
    wav, result = spoken("phone")
    configure(runtime, creds.bot_id, redact=["card", "ssn", "email"], region="US")
    store_real(runtime, creds.bot_id, wav, result, tmp_path / "w", "67aa38026e199c8f470e0c03")
    doc = fetch(client, creds, "67aa38026e199c8f470e0c03", **WITH_WORDS)["transcriptions"][0]
    assert doc["callbackNumber"] == "+1" + "".join(CLIPS["phone"].groups), result.text
    assert doc["redacted"] == []  # a phone number is not a card
    assert doc["components"][0]["data"]["text"] == result.text


@pytest.mark.model
def test_real_spoken_card_number_is_redacted(
    client: TestClient,
    creds: Credentials,
    runtime: Runtime,
    spoken: Callable[[str], tuple[Path, EngineTranscript]],
    tmp_path: Path,
) -> None:
    """Whisper base does not get sixteen digits said one by one quite right (here it wrote
    "4123456 0123456 1212" for 4123 4560 1234 5612; other cuts gave "4156 0156 1 2 3 4156
    1 2"), which is why redaction needs no Luhn check: whatever digits it wrote, no 13+
    digit run may be stored."""
    wav, result = spoken("card")
    assert any(len(run.digits) >= 13 for run in digit_runs(result.text)), result.text
    configure(runtime, creds.bot_id, redact=["card"])
    store_real(runtime, creds.bot_id, wav, result, tmp_path / "w", "67aa38026e199c8f470e0c04")
    doc = fetch(client, creds, "67aa38026e199c8f470e0c04", **WITH_WORDS)["transcriptions"][0]
    text = doc["components"][0]["data"]["text"]
    assert "[card]" in text and doc["redacted"] == ["card"]
    assert not any(len(run.digits) >= 13 for run in digit_runs(text)), text
    words = doc["words"]
    assert not any(len(run.digits) >= 13 for run in digit_runs(" ".join(w["word"] for w in words)))
    (placeholder,) = [w for w in words if "[card]" in w["word"]]
    digit_words = [w for w in result.words if any(ch.isdigit() for ch in w.word)]
    assert placeholder["start"] <= digit_words[0].start + 1e-6
    assert placeholder["end"] >= max(w.end for w in digit_words if w.end <= placeholder["end"])
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
