"""Runs of digits in a transcript, written or spoken, with where they are in the text.

Whisper writes a caller's digits in many ways: "555-123-4567", "5-5-5, 1-2-3", "(555)
123 4567", "+44 20 7946 0958", or in words: "five five five", "oh" for zero, "double
five", "triple seven", "fifty five", "eight hundred". :func:`digit_runs` reads them all
into :class:`DigitRun`s (the digits, a leading "+" when one was written or "plus" spoken,
and the character span in the text) for the call-back number and for redaction.

A run continues across separators a speaker or Whisper puts between groups (spaces,
commas, dashes, dots, brackets) and across hesitations ("uh", "um"); any other word ends
it. "oh" counts as zero only next to another digit, so "Oh, hi" is not a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS: dict[str, str] = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
OH_WORDS = frozenset({"oh", "o"})  # zero, only between other digits
TEENS: dict[str, str] = {
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
}
TENS: dict[str, str] = {
    "twenty": "2",
    "thirty": "3",
    "forty": "4",
    "fifty": "5",
    "sixty": "6",
    "seventy": "7",
    "eighty": "8",
    "ninety": "9",
}
REPEATS: dict[str, int] = {"double": 2, "triple": 3}
SCALES: dict[str, str] = {"hundred": "00", "thousand": "000"}
# Hesitations a speaker puts between digit groups without ending the number.
FILLERS = frozenset({"uh", "um", "er", "erm", "ah", "hmm"})

# Words, digit groups, a plus sign, or one other non-space character; spaces are skipped.
_TOKEN_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|\+|[^\sA-Za-z\d]")
# Characters allowed between the groups of one number.
_SEPARATORS = frozenset(",-.()/–—")


@dataclass(frozen=True)
class DigitRun:
    digits: str
    start: int  # character span in the text, the leading "+" included
    end: int
    plus: bool = False  # "+" written or "plus" spoken before the digits

    @property
    def number(self) -> str:
        return ("+" if self.plus else "") + self.digits


@dataclass(frozen=True)
class _Token:
    text: str
    start: int
    end: int

    @property
    def lower(self) -> str:
        return self.text.lower()


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) for each word, digit group and symbol of ``text``."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]


def _is_digit_word(token: _Token) -> bool:
    word = token.lower
    return (
        token.text.isdigit()
        or word in UNITS
        or word in TEENS
        or word in TENS
        or word in REPEATS
        or word in SCALES
    )


def digit_runs(text: str) -> list[DigitRun]:
    """Every run of digits in ``text``, in order (single digits included)."""
    tokens = [_Token(t, s, e) for t, s, e in tokenize(text)]
    runs: list[DigitRun] = []
    i = 0
    while i < len(tokens):
        if not (_is_digit_word(tokens[i]) or _is_oh_digit(tokens, i)):
            i += 1
            continue
        run, i = _read_run(tokens, i)
        if run is not None:
            runs.append(run)
    return runs


def _is_oh_digit(tokens: list[_Token], i: int) -> bool:
    """ "oh" is zero when a digit is next to it (past separators)."""
    if tokens[i].lower not in OH_WORDS:
        return False
    return _neighbour_is_digit(tokens, i, -1) or _neighbour_is_digit(tokens, i, 1)


def _neighbour_is_digit(tokens: list[_Token], i: int, step: int) -> bool:
    j = i + step
    while 0 <= j < len(tokens) and tokens[j].text in _SEPARATORS:
        j += step
    if not 0 <= j < len(tokens):
        return False
    token = tokens[j]
    return token.text.isdigit() or token.lower in UNITS or token.lower in REPEATS


def _read_run(tokens: list[_Token], first: int) -> tuple[DigitRun | None, int]:
    """Read the run starting at ``tokens[first]``; return it and the index after it."""
    digits: list[str] = []
    end_index = first  # last token that gave digits
    i = first
    pending_repeat = 1
    while i < len(tokens):
        token = tokens[i]
        word = token.lower
        if token.text.isdigit():
            # "double 5" is 55; a repeat word before a longer group is taken as filler
            repeated = token.text * pending_repeat if len(token.text) == 1 else token.text
            digits.append(repeated)
            pending_repeat = 1
        elif word in UNITS:
            digits.append(UNITS[word] * pending_repeat)
            pending_repeat = 1
        elif word in OH_WORDS and (
            _is_oh_digit(tokens, i) or (digits and tokens[i - 1].text not in _SEPARATORS)
        ):
            # "... one oh oh": the last "oh" follows a zero, with no pause between.
            digits.append("0" * pending_repeat)
            pending_repeat = 1
        elif word in TEENS:
            digits.append(TEENS[word])
        elif word in TENS:
            # "fifty five" and "sixty-five" are 55 and 65, "fifty" alone 50.
            j = i + 2 if i + 2 < len(tokens) and tokens[i + 1].text == "-" else i + 1
            nxt = tokens[j].lower if j < len(tokens) else ""
            if nxt in UNITS and nxt != "zero":
                digits.append(TENS[word] + UNITS[nxt])
                i = j
            else:
                digits.append(TENS[word] + "0")
        elif word in REPEATS:
            pending_repeat = REPEATS[word]
            i += 1
            continue
        elif word in SCALES and digits:
            digits.append(SCALES[word])  # "eight hundred" is 800
        elif token.text in _SEPARATORS or word in FILLERS:
            i += 1
            continue
        else:
            break
        end_index = i
        i += 1
    if not digits:
        return None, max(i, first + 1)
    start = tokens[first].start
    plus = False
    previous = tokens[first - 1] if first > 0 else None
    if previous is not None and (previous.text == "+" or previous.lower == "plus"):
        plus = True
        start = previous.start
    return DigitRun("".join(digits), start, tokens[end_index].end, plus), end_index + 1
