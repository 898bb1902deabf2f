"""A bot's post-processing of a finished transcript: the call-back number, then redaction.

The order matters: the call-back number is read from the words as spoken, before
redaction could replace it, and redaction is told to leave that number's digits alone (a
13-15 digit international number is otherwise card-shaped). Both read spoken numbers in
the transcript's language.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from voicemail.transcription.callback import caller_region, find_callback
from voicemail.transcription.redact import AudioSpan, redact_transcript
from voicemail.transcription.segments import Word


@dataclass(frozen=True)
class PostProcessed:
    text: str
    words: list[Word]
    callback_number: str | None  # E.164
    redacted: list[str]  # the kinds of data found and replaced
    audio: list[AudioSpan] = field(default_factory=list)  # where they were said


def post_process(
    text: str,
    words: Sequence[Word],
    *,
    redact: Iterable[str],
    language: str | None = None,
    region: str | None = None,
    caller: str | None = None,
) -> PostProcessed:
    """``text`` and ``words`` of a transcript in ``language`` after the bot's settings
    (``Bot.redact``, ``Bot.region``); ``caller`` is the caller's own number, whose country
    is the second guess for a number said without its country code."""
    found = find_callback(text, language=language, regions=(region, caller_region(caller)))
    run, callback_number = found if found is not None else (None, None)
    redacted = redact_transcript(
        text,
        words,
        redact,
        keep_number=run.digits if run is not None else None,  # the digits as said
        language=language,
    )
    return PostProcessed(
        redacted.text, redacted.words, callback_number, redacted.kinds, redacted.audio
    )
