"""Runs of digits in a transcript, written or spoken, with where they are in the text.

Whisper writes a caller's digits in many ways: "555-123-4567", "5-5-5, 1-2-3", "(555)
123 4567", "+44 20 7946 0958", or in words: "five five five", "oh" for zero, "double
five", "triple seven", "fifty five", "eight hundred". :func:`digit_runs` reads them all
into :class:`DigitRun`s (the digits, a leading "+" when one was written or "plus" spoken,
and the character span in the text) for the call-back number and for redaction.

A run continues across separators a speaker or Whisper puts between groups (spaces,
commas, dashes, dots, brackets) and across hesitations ("uh", "um"); any other word ends
it. "oh" counts as zero only next to another digit, so "Oh, hi" is not a number.

Spoken numbers are read in the transcript's language. English has its own reader (above).
Spanish, French, German, Portuguese, Italian, Dutch and Danish
(:data:`SPOKEN_NUMBER_LANGUAGES`) are read with ``text2num``, which knows each language's
cardinals and compounds ("cuatro", "veintitrés", "cuarenta y cinco", "quatre-vingt-dix",
"dreiundzwanzig", "cuatro mil"); a small table per language adds what it leaves out:
"doble"/"triple" before a digit, hesitations, the spoken "+" ("más", "plus"...), and
Brazilian "meia" for six. In any other language only numbers written with digits are
read (Whisper writes most numbers that way); decimal digits of other scripts ("٠٥٥")
count as digits too.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field

import text_to_num

log = logging.getLogger(__name__)

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
# The same for any script: words of letters (accents, "l'", "quatre-vingt" in parts).
_WORD_TOKEN_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+|\+|[^\s\w]")
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
class SpokenWords:
    """What a language says around its digits that ``text2num`` does not read."""

    repeats: dict[str, int] = field(default_factory=dict)  # "doble cinco" is 55
    fillers: frozenset[str] = frozenset()  # hesitations inside a number
    plus: frozenset[str] = frozenset()  # the spoken "+"
    # Other words for a digit, read as that digit next to another number ("três meia").
    aliases: dict[str, str] = field(default_factory=dict)


# Languages whose spoken numbers are read; in others only written digits are.
SPOKEN_WORDS: dict[str, SpokenWords] = {
    "es": SpokenWords(
        repeats={"doble": 2, "triple": 3},
        fillers=frozenset({"eh", "em", "mm", "mmm", "este"}),
        plus=frozenset({"más"}),
    ),
    "fr": SpokenWords(
        repeats={"double": 2, "triple": 3},
        fillers=frozenset({"euh", "heu", "hum", "bah"}),
        plus=frozenset({"plus"}),
    ),
    "de": SpokenWords(
        repeats={"doppel": 2, "doppelt": 2, "dreifach": 3},
        fillers=frozenset({"äh", "ähm", "öh", "hm", "ehm"}),
        plus=frozenset({"plus"}),
    ),
    "pt": SpokenWords(
        repeats={"duplo": 2, "dupla": 2, "triplo": 3, "tripla": 3},
        fillers=frozenset({"ah", "ahn", "hã", "hum", "eh"}),
        plus=frozenset({"mais"}),
        aliases={"meia": "seis"},  # Brazilian callers say "meia" (meia dúzia) for six
    ),
    "it": SpokenWords(
        repeats={"doppio": 2, "triplo": 3},
        fillers=frozenset({"eh", "ehm", "uhm", "mh"}),
        plus=frozenset({"più"}),
    ),
    "nl": SpokenWords(
        repeats={"dubbel": 2, "dubbele": 2, "driedubbel": 3},
        fillers=frozenset({"eh", "ehm", "uh", "uhm"}),
        plus=frozenset({"plus"}),
    ),
    "da": SpokenWords(
        repeats={"dobbelt": 2, "tredobbelt": 3},
        fillers=frozenset({"øh", "øhm", "hm"}),
        plus=frozenset({"plus"}),
    ),
}
SPOKEN_NUMBER_LANGUAGES = ("en", *SPOKEN_WORDS)
_NO_WORDS = SpokenWords()


def language_code(language: str | None) -> str:
    """The ISO 639-1 code of a transcript's language; English when none was detected."""
    return (language or "en").strip().lower().split("-")[0].split("_")[0] or "en"


def ascii_digits(text: str) -> str:
    """``text`` (decimal digits of any script) as ASCII digits."""
    return "".join(str(unicodedata.decimal(ch)) for ch in text)


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
        token.text.isdecimal()
        or word in UNITS
        or word in TEENS
        or word in TENS
        or word in REPEATS
        or word in SCALES
    )


def digit_runs(text: str, language: str | None = None) -> list[DigitRun]:
    """Every run of digits in ``text``, in order (single digits included), numbers spoken in
    ``language`` (a transcript's detected language; English when None) read as digits."""
    code = language_code(language)
    if code != "en":
        return _other_language_runs(text, code)
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
    return token.text.isdecimal() or token.lower in UNITS or token.lower in REPEATS


def _read_run(tokens: list[_Token], first: int) -> tuple[DigitRun | None, int]:
    """Read the run starting at ``tokens[first]``; return it and the index after it."""
    digits: list[str] = []
    end_index = first  # last token that gave digits
    i = first
    pending_repeat = 1
    while i < len(tokens):
        token = tokens[i]
        word = token.lower
        if token.text.isdecimal():
            # "double 5" is 55; a repeat word before a longer group is taken as filler
            numeral = ascii_digits(token.text)
            repeated = numeral * pending_repeat if len(numeral) == 1 else numeral
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


# -- other languages -------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """A word, numeral or symbol of the text, or a spoken number of several words."""

    text: str
    start: int
    end: int
    digits: str | None = None  # what it says, when it is a number

    @property
    def lower(self) -> str:
        return self.text.lower()


class _T2NToken:
    """A token as ``text_to_num.find_numbers`` reads it (its ``Token`` protocol)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def text(self) -> str:
        return self._text

    def nt_separated(self, previous: object) -> bool:
        return False

    def not_a_number_part(self) -> bool:
        return False


def _other_language_runs(text: str, code: str) -> list[DigitRun]:
    words = SPOKEN_WORDS.get(code, _NO_WORDS)
    tokens = [(m.group(), m.start(), m.end()) for m in _WORD_TOKEN_RE.finditer(text)]
    items = _spoken_items(text, tokens, code) if code in SPOKEN_WORDS else _plain_items(tokens)
    runs: list[DigitRun] = []
    i = 0
    while i < len(items):
        if items[i].digits is None and items[i].lower not in words.repeats:
            i += 1
            continue
        run, i = _read_items(items, i, words)
        if run is not None:
            runs.append(run)
    return runs


def _plain_items(tokens: list[tuple[str, int, int]]) -> list[_Item]:
    return [_Item(t, s, e, ascii_digits(t) if t.isdecimal() else None) for t, s, e in tokens]


def _spoken_items(text: str, tokens: list[tuple[str, int, int]], code: str) -> list[_Item]:
    """``tokens`` with each number that ``text2num`` finds made one item holding its digits.

    Isolated small numbers ("un momento", "ein Moment") are not numbers to it: only numbers
    of 3 and more, or in a sequence of numbers, are (its default threshold).
    """
    aliases = SPOKEN_WORDS[code].aliases
    words = [_alias(tokens, i, aliases, code) for i in range(len(tokens))]
    try:
        found = text_to_num.find_numbers([_T2NToken(w) for w in words], code)
    except Exception:  # a fault of the library must not lose the transcript
        log.exception("spoken numbers not read", extra={"language": code})
        found = []
    items: list[_Item] = []
    position = 0
    for occurrence in found:
        first, last = int(occurrence.start), int(occurrence.end)  # tokens [first, last)
        digits = str(occurrence.text)
        if occurrence.is_ordinal or not digits.isdecimal() or first < position:
            continue  # "cuarto", "3,5": not digits of a number to dial or redact
        items += _plain_items(tokens[position:first])
        start, end = tokens[first][1], tokens[last - 1][2]
        items.append(_Item(text[start:end], start, end, ascii_digits(digits)))
        position = last
    items += _plain_items(tokens[position:])
    return items


def _alias(tokens: list[tuple[str, int, int]], i: int, aliases: dict[str, str], code: str) -> str:
    """The token's word for ``text2num``: an alias ("meia") next to a number is its digit."""
    word = tokens[i][0]
    alias = aliases.get(word.lower())
    if alias is None:
        return word
    for j in (i - 1, i + 1):
        if 0 <= j < len(tokens):
            neighbour = tokens[j][0].lower()
            if neighbour.isdecimal() or neighbour in aliases or _is_number_word(neighbour, code):
                return alias
    return word


def _is_number_word(word: str, code: str) -> bool:
    try:
        text_to_num.text2num(word, code)
    except ValueError:  # not a number in this language
        return False
    return True


def _read_items(items: list[_Item], first: int, words: SpokenWords) -> tuple[DigitRun | None, int]:
    """Read the run starting at ``items[first]``; return it and the index after it."""
    digits: list[str] = []
    end_index = first
    i = first
    pending_repeat = 1
    while i < len(items):
        item = items[i]
        if item.digits is not None:
            single = len(item.digits) == 1
            digits.append(item.digits * pending_repeat if single else item.digits)
            pending_repeat = 1
        elif item.lower in words.repeats:
            pending_repeat = words.repeats[item.lower]
            i += 1
            continue
        elif item.text in _SEPARATORS or item.lower in words.fillers:
            i += 1
            continue
        else:
            break
        end_index = i
        i += 1
    if not digits:
        return None, max(i, first + 1)
    start = items[first].start
    plus = False
    previous = items[first - 1] if first > 0 else None
    if previous is not None and (previous.text == "+" or previous.lower in words.plus):
        plus = True
        start = previous.start
    return DigitRun("".join(digits), start, items[end_index].end, plus), end_index + 1
