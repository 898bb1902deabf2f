"""The number a caller asks to be called back on, found in the transcript.

Callers say it many ways ("call me back at five five five, one two three, four five six
seven", "my number is 555-123-4567", "reach me on plus four four two oh ..."); the digits
are read by :mod:`voicemail.transcription.digits`. The choice, in order:

1. the first run of 7-15 digits (E.164's longest is 15) that starts soon after a cue
   ("call me back at", "my number is", "reach me on", ...);
2. else the longest run that looks like a phone number: 7-12 digits, or up to 15 when
   it starts with "+" / "plus". 13-19 digits without a cue is how a card number looks,
   so it is never taken; nor a run after "extension" (an extension alone is no number to
   dial), nor one after a word that names another kind of number ("order", "account",
   "social security", ...).

The result is the digits, with a leading "+" when one was written or "plus" spoken.
"""

from __future__ import annotations

import re

from voicemail.transcription.digits import DigitRun, digit_runs

MIN_DIGITS = 7  # a local number without area code ("555 1234")
MAX_DIGITS = 15  # E.164
MAX_DIGITS_WITHOUT_CUE = 12  # 13+ without a cue may be a card number (13-19 digits)
# How far after a cue the number may start: room for "at", "it's", "uh, that's", but not
# for a whole other clause.
CUE_REACH_CHARS = 40

_CUE_RE = re.compile(
    r"""\b(?:
        call(?:\s+(?:me|us))?\s*-?\s*back
      | call\s+(?:me|us)\s+(?:at|on)
      | (?:reach|text|ring|phone|contact)\s+(?:me|us)
      | get\s+back\s+to\s+(?:me|us)
      | (?:my|our|the\s+best|a\s+good)\s+
        (?:(?:phone|cell|cellphone|mobile|callback|call-back|contact|telephone|home|work|direct)\s+)?
        (?:number|line)
      | my\s+(?:cell|cellphone|mobile|phone)
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
# A run right after these is an extension, not a number to dial.
_EXTENSION_RE = re.compile(r"\b(?:extension|ext|x)\W*$", re.IGNORECASE)
# Words naming other kinds of numbers, looked for just before a run that has no cue.
_OTHER_NUMBER_RE = re.compile(
    r"\b(?:order|account|invoice|reference|ref|ticket|case|policy|card|credit|debit|visa|"
    r"mastercard|amex|member|membership|id|confirmation|tracking|claim|serial|pin|"
    r"social|security|ssn|routing|iban|booking|reservation)\b[^.?!]{0,30}$",
    re.IGNORECASE,
)


def find_callback_number(text: str) -> str | None:
    """The call-back number in ``text`` as digits (a leading "+" kept), or None."""
    run = callback_run(text)
    return run.number if run is not None else None


def callback_run(text: str) -> DigitRun | None:
    """The digit run of ``text`` that is the call-back number (see the module docs)."""
    runs = [run for run in digit_runs(text) if not _EXTENSION_RE.search(text[: run.start])]
    for cue in _CUE_RE.finditer(text):
        for run in runs:
            if run.start < cue.end():
                continue
            if run.start - cue.end() > CUE_REACH_CHARS:
                break
            if _OTHER_NUMBER_RE.search(text[cue.end() : run.start]):
                break  # "call me back; my order number is ...": not this cue's number
            if MIN_DIGITS <= len(run.digits) <= MAX_DIGITS:
                return run
    candidates = [
        run
        for run in runs
        if MIN_DIGITS <= len(run.digits) <= (MAX_DIGITS if run.plus else MAX_DIGITS_WITHOUT_CUE)
        and not _OTHER_NUMBER_RE.search(text[max(0, run.start - 60) : run.start])
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda run: len(run.digits))  # the first of the longest
