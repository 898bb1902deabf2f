"""Redaction of card numbers, social security numbers and e-mail addresses from a transcript.

A bot chooses the kinds (``Bot.redact`` ⊆ :data:`KINDS`). Each match is replaced in the
text by ``[card]``, ``[ssn]`` or ``[email]``; in the word list the words it covers become one
placeholder word that keeps the first word's start and the last word's end, so a player
highlighting words as it plays still lines up.

- **card**: any run of 13 or more digits, written or spoken ("four one one one ...",
  "cuatro cinco cinco seis ..." in a Spanish transcript), spaces and dashes allowed (see
  :mod:`voicemail.transcription.digits` for the languages whose spoken numbers are read;
  in the others, numbers Whisper writes with digits). No Luhn check:
  Whisper mishears a digit now and then, and a card number with one wrong digit fails
  Luhn yet still gives away the other fifteen. PCI DSS asks that card data not be stored;
  over-redacting a long order number is the cheaper mistake. Runs longer than 19 digits
  are redacted too (a card number run into its expiry date or security code). The
  call-back number is never redacted as a card (it is taken before redaction).
- **ssn**: the written shape 3-2-4 ("123-45-6789", "123 45 6789") anywhere, and any run
  of exactly 9 digits within :data:`SSN_CUE_REACH_CHARS` of "social security", "social",
  "SSN" or "seguro social".
- **email**: written addresses of any domain and TLD, IDN ones included
  ("anna@firma.pl", "josé@correo.españa"), and spoken ones ("john dot smith at example
  dot com"; Whisper often writes a mix: "john.smith at example.com"), spelled in English
  or in the transcript's language ("anna arroba firma punto pl": :data:`EMAIL_WORDS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from voicemail.transcription.digits import digit_runs, language_code
from voicemail.transcription.segments import Word

CARD = "card"
SSN = "ssn"
EMAIL = "email"
KINDS = (CARD, SSN, EMAIL)

CARD_MIN_DIGITS = 13  # the shortest card numbers (old Visa); the longest are 19
SSN_DIGITS = 9
# How far from "social security" a 9-digit run may be ("my social security number is, uh,
# one two three ..."): the cue and the number are in one sentence.
SSN_CUE_REACH_CHARS = 50

_SSN_SHAPE_RE = re.compile(r"(?<![\d-])\d{3}[- ]\d{2}[- ]\d{4}(?![\d-])")
# US callers speaking Spanish or Portuguese say "seguro social".
_SSN_CUE_RE = re.compile(
    r"\b(?:social(?:\s+security)?|s\.?\s?s\.?\s?n\.?|seguro\s+social)\b", re.IGNORECASE
)


# E-mail addresses: any local@domain.tld shape, in any script (IDN domains such as
# "correo.españa" included), with no list of top-level domains: a TLD is 2 to 63 letters
# or an "xn--" label. A transcript also spells them out in its language ("anna arroba
# firma punto pl"): these are each language's words for "@", "." and the separators of a
# local part (regular expressions). A written "." counts only without spaces around it,
# so a sentence's full stop ("I was at home. Then") never ends a domain.
@dataclass(frozen=True)
class EmailWords:
    at: str
    dot: str
    local_separators: str  # "dot", "underscore", "dash", ...


EMAIL_WORDS: dict[str, EmailWords] = {
    "en": EmailWords(r"at(?:\s+sign)?", r"dot", r"dot|underscore|dash|hyphen|plus"),
    "es": EmailWords(r"arroba", r"punto", r"punto|gui[oó]n\s+bajo|gui[oó]n|barra\s+baja|m[aá]s"),
    "fr": EmailWords(r"arobase|arrobase|at", r"point", r"point|tiret\s+bas|tiret|underscore"),
    "de": EmailWords(r"at|ät|klammeraffe", r"punkt", r"punkt|unterstrich|bindestrich|minus|plus"),
    "pt": EmailWords(r"arroba", r"ponto", r"ponto|underline|underscore|tra[cç]o|h[ií]fen"),
    "it": EmailWords(r"chiocciola|at", r"punto", r"punto|trattino\s+basso|underscore|trattino"),
    "nl": EmailWords(r"apenstaartje|at", r"punt", r"punt|liggend\s+streepje|underscore|streepje"),
    "da": EmailWords(r"snabel-a|at", r"punktum|prik", r"punktum|prik|understregning|bindestreg"),
}


# Letters of a local part: Latin, Greek and Cyrillic (with digits). A local part in a
# script written without spaces (Japanese, Chinese) could not be told from the words
# before it, so it is not looked for; a domain and its TLD may be in any script.
_LOCAL_LETTERS = "0-9a-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff"
_LATIN = "a-z\u00c0-\u024f"


def _email_re(words: Sequence[EmailWords]) -> re.Pattern[str]:
    """The address pattern, spoken with any of ``words`` or written."""

    def written_or_spoken(written: str, spoken: list[str]) -> str:
        alternatives = [written] + ([rf"\s+(?:{'|'.join(spoken)})\s+"] if spoken else [])
        return f"(?:{'|'.join(alternatives)})"

    at = written_or_spoken(r"\s*@\s*", [w.at for w in words])
    dot = written_or_spoken(r"\.", [w.dot for w in words])
    local_sep = written_or_spoken(r"\s*[._+-]\s*", [w.local_separators for w in words])
    word = f"[{_LOCAL_LETTERS}]+"
    label = r"[^\W_](?:[\w-]*[^\W_])?"
    tld = (
        r"(?:xn--[a-z0-9-]{1,59}(?![\w-])"
        rf"|[{_LATIN}]{{2,63}}(?![0-9{_LATIN}_-])"  # "anna@firma.plです": the TLD is "pl"
        rf"|[^\W\d_{_LATIN}]{{2,63}}(?![\w-]))"
    )
    return re.compile(
        rf"(?<![{_LOCAL_LETTERS}%+-]){word}(?:{local_sep}{word})*{at}{label}(?:{dot}{label})*{dot}{tld}",
        re.IGNORECASE,
    )


# English spellings count in every language's transcript (a caller spelling an address
# the English way, or a language detected wrongly); each language adds its own.
_EMAIL_RES = {
    code: _email_re([EMAIL_WORDS["en"], words] if code != "en" else [words])
    for code, words in EMAIL_WORDS.items()
}
_OTHER_EMAIL_RE = _email_re([EMAIL_WORDS["en"]])  # languages without words of their own

# A spoken "reach me at acme dot com" is a web address, not someone's e-mail: a spoken
# address's local part is not one of these words.
_NOT_LOCAL_PARTS = frozenset(
    {
        "me",
        "us",
        "him",
        "her",
        "them",
        "you",
        "it",
        "is",
        "was",
        "email",
        "mail",
        "address",
        "which",
        "that",
        "there",
        "here",
        "look",
        "go",
        "online",
        "site",
        "website",
    }
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class AudioSpan:
    """Where a redacted run of words was said: from the end of the word before it (0.0, the
    recording's start, when none) to the start of the word after it (None, the recording's
    end, when none), in seconds. :mod:`voicemail.transcription.bleep` bleeps these."""

    start: float
    end: float | None
    kinds: tuple[str, ...]  # what was found there, in KINDS order


@dataclass(frozen=True)
class Redacted:
    text: str
    words: list[Word]
    kinds: list[str]  # what was found and replaced, in KINDS order
    audio: list[AudioSpan] = field(default_factory=list)  # in time order


def redact_transcript(
    text: str,
    words: Sequence[Word],
    kinds: Iterable[str],
    *,
    keep_number: str | None = None,
    language: str | None = None,
) -> Redacted:
    """``text`` and ``words`` with every match of ``kinds`` replaced by its placeholder.

    ``keep_number`` is the call-back number (digits, "+" allowed): a digit run with those
    digits is never taken for a card. ``language`` is the transcript's: numbers and
    addresses spoken in it are read (English when None).
    """
    wanted = [kind for kind in KINDS if kind in set(kinds)]
    if not wanted:
        return Redacted(text, list(words), [])
    text_spans = find_spans(text, wanted, keep_number=keep_number, language=language)
    new_text = _replace(text, text_spans)

    # The words are searched as one string of their own: the text and the words' texts
    # can differ in spacing, so the text's offsets would not carry over.
    joined, offsets = _join_words(words)
    word_spans = find_spans(joined, wanted, keep_number=keep_number, language=language)
    new_words, audio = _replace_words(list(words), offsets, joined, word_spans)

    in_words = {span.kind for span in word_spans}
    found = {span.kind for span in text_spans} | in_words
    # A kind the text has but the words lack (their spacing differed) has no time to cut
    # on: the whole recording stands for it.
    audio += [AudioSpan(0.0, None, (kind,)) for kind in KINDS if kind in found - in_words]
    return Redacted(new_text, new_words, [kind for kind in KINDS if kind in found], audio)


def find_spans(
    text: str,
    kinds: Sequence[str],
    *,
    keep_number: str | None = None,
    language: str | None = None,
) -> list[Span]:
    """The spans of ``text`` to redact, without overlaps, in order."""
    spans: list[Span] = []
    if EMAIL in kinds:
        for match in _EMAIL_RES.get(language_code(language), _OTHER_EMAIL_RE).finditer(text):
            local = re.split(r"\W+", match.group().lower(), maxsplit=1)[0]
            spoken = "@" not in match.group()
            if spoken and local in _NOT_LOCAL_PARTS:
                continue
            spans.append(Span(match.start(), match.end(), EMAIL))
    keep_digits = (keep_number or "").lstrip("+")
    if SSN in kinds:
        for match in _SSN_SHAPE_RE.finditer(text):
            spans.append(Span(match.start(), match.end(), SSN))
    runs = digit_runs(text, language) if (CARD in kinds or SSN in kinds) else []
    if SSN in kinds:
        cues = [cue.span() for cue in _SSN_CUE_RE.finditer(text)]
        for run in runs:
            near = any(
                -SSN_CUE_REACH_CHARS <= run.start - cue_end <= SSN_CUE_REACH_CHARS
                or 0 <= cue_start - run.end <= SSN_CUE_REACH_CHARS
                for cue_start, cue_end in cues
            )
            if len(run.digits) == SSN_DIGITS and near:
                spans.append(Span(run.start, run.end, SSN))
    if CARD in kinds:
        for run in runs:
            if len(run.digits) >= CARD_MIN_DIGITS and run.digits != keep_digits:
                spans.append(Span(run.start, run.end, CARD))
    return _without_overlaps(spans)


def _without_overlaps(spans: list[Span]) -> list[Span]:
    """Earlier, then longer spans win; a span overlapping a kept one is merged into it."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if out and span.start < out[-1].end:
            last = out[-1]
            out[-1] = Span(last.start, max(last.end, span.end), last.kind)
            continue
        out.append(span)
    return out


def placeholder(kind: str) -> str:
    return f"[{kind}]"


def _replace(text: str, spans: Sequence[Span]) -> str:
    parts: list[str] = []
    position = 0
    for span in spans:
        parts.append(text[position : span.start])
        parts.append(placeholder(span.kind))
        position = span.end
    parts.append(text[position:])
    return "".join(parts)


def _join_words(words: Sequence[Word]) -> tuple[str, list[tuple[int, int]]]:
    offsets: list[tuple[int, int]] = []
    parts: list[str] = []
    position = 0
    for word in words:
        if parts:
            position += 1  # the joining space
        offsets.append((position, position + len(word.word)))
        parts.append(word.word)
        position += len(word.word)
    return " ".join(parts), offsets


def _replace_words(
    words: list[Word], offsets: list[tuple[int, int]], joined: str, spans: Sequence[Span]
) -> tuple[list[Word], list[AudioSpan]]:
    # Spans sharing a word ("a@b.com,c@d.com" is one word) make one placeholder word.
    groups: list[tuple[int, int, list[Span]]] = []  # first word, last word, spans
    for span in spans:
        covered = [i for i, (a, b) in enumerate(offsets) if a < span.end and b > span.start]
        if not covered:
            continue
        if groups and covered[0] <= groups[-1][1]:
            first, last, members = groups[-1]
            groups[-1] = (first, max(last, covered[-1]), [*members, span])
        else:
            groups.append((covered[0], covered[-1], [span]))
    out: list[Word] = []
    audio: list[AudioSpan] = []
    index = 0
    for first, last, members in groups:
        found = {span.kind for span in members}
        audio.append(
            AudioSpan(
                # min/max: the redacted words themselves, whatever their neighbours' times.
                start=min(words[first - 1].end, words[first].start) if first > 0 else 0.0,
                end=max(words[last + 1].start, words[last].end) if last + 1 < len(words) else None,
                kinds=tuple(kind for kind in KINDS if kind in found),
            )
        )
        out.extend(words[index:first])
        begin, end = offsets[first][0], offsets[last][1]
        # What the first and last words carry outside the match stays ("is:", "6789.").
        local = [
            Span(max(sp.start, begin) - begin, min(sp.end, end) - begin, sp.kind) for sp in members
        ]
        out.append(
            Word(
                word=_replace(joined[begin:end], local),
                start=words[first].start,
                end=words[last].end,
                probability=min(w.probability for w in words[first : last + 1]),
            )
        )
        index = last + 1
    out.extend(words[index:])
    return out, audio
