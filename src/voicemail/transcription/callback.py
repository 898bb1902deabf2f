"""The number a caller asks to be called back on, found in the transcript, in E.164.

Callers say it many ways ("call me back at five five five, one two three, four five six
seven", "my number is 555-123-4567", "reach me on plus four four two oh ...", "llámame al
seis uno dos ..."); the digits are read by :mod:`voicemail.transcription.digits` in the
transcript's language. The candidates, in order:

1. each run of 7-15 digits (E.164's longest is 15) that starts soon after a cue in the
   transcript's language ("call me back at", "my number is", "llámame al", "mon numéro
   est", ...: :data:`CUES`);
2. then the runs that look like a phone number, longest first: 7-12 digits, or up to 15
   when it starts with "+" / "plus". 13-19 digits without a cue is how a card number
   looks, so it is never taken; nor a run after "extension" (an extension alone is no
   number to dial), nor one after a word that names another kind of number ("order",
   "account", "social security", "pedido", ...).

The call-back number is the first candidate that ``phonenumbers`` finds to be a valid
number, given in E.164 ("+12125550199"). A number said without its country code is read
in the bot's region (``bots configure --region``), then in the country of the caller's
own number when that is an international one; with neither, only numbers said with their
country code ("+44 ...", "plus four four ...") are understood. A number that is not valid
where it is read (too short, a fictional 555 area code, a digit misheard) is not offered:
a wrong number to call back is worse than none, and the transcript still has the digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import phonenumbers

from voicemail.transcription.digits import DigitRun, digit_runs, language_code

MIN_DIGITS = 7  # a local number without area code ("555 1234")
MAX_DIGITS = 15  # E.164
MAX_DIGITS_WITHOUT_CUE = 12  # 13+ without a cue may be a card number (13-19 digits)
# How far after a cue the number may start: room for "at", "it's", "uh, that's", but not
# for a whole other clause.
CUE_REACH_CHARS = 40
# How far before a run without a cue a word naming another kind of number may be.
OTHER_NUMBER_REACH_CHARS = 60


@dataclass(frozen=True)
class Cues:
    """A language's words around a call-back number (regular expressions, no flags)."""

    callback: str  # "call me back at", "my number is"
    extension: str  # a run right after it is an extension
    other_number: str  # words naming other kinds of numbers ("order", "account")


_FLAGS = re.IGNORECASE | re.VERBOSE

CUES: dict[str, Cues] = {
    "en": Cues(
        callback=r"""\b(?:
            call(?:\s+(?:me|us))?\s*-?\s*back
          | call\s+(?:me|us)\s+(?:at|on)
          | (?:reach|text|ring|phone|contact)\s+(?:me|us)
          | get\s+back\s+to\s+(?:me|us)
          | (?:my|our|the\s+best|a\s+good)\s+
            (?:(?:phone|cell|cellphone|mobile|callback|call-back|contact|telephone|home|work
                |direct)\s+)?
            (?:number|line)
          | my\s+(?:cell|cellphone|mobile|phone)
        )\b""",
        extension=r"\b(?:extension|ext|x)",
        other_number=r"""\b(?:order|account|invoice|reference|ref|ticket|case|policy|card|credit
            |debit|visa|mastercard|amex|member|membership|id|confirmation|tracking|claim|serial
            |pin|social|security|ssn|routing|iban|booking|reservation)\b""",
    ),
    "es": Cues(
        callback=r"""\b(?:
            ll[aá]m(?:a|e)(?:me|nos) | ll[aá]meme | llamar(?:me|nos) | devolver(?:me|nos)
          | devu[eé]lva(?:me|nos)? | contact(?:ar|e|a)(?:me|nos) | (?:localizar|ubicar)(?:me|nos)
          | (?:mi|nuestro|el)\s+(?:n[uú]mero|tel[eé]fono|celular|m[oó]vil)
        )\b""",
        extension=r"\b(?:extensi[oó]n|ext|anexo|interno)",
        other_number=r"""\b(?:pedido|orden|cuenta|factura|referencia|tarjeta|cr[eé]dito
            |d[eé]bito|p[oó]liza|cliente|socio|confirmaci[oó]n|seguimiento|reclamo
            |reclamaci[oó]n|serie|pin|seguro\s+social|expediente|reserva|iban|dni|nie
            |pasaporte|caso|ticket)\b""",
    ),
    "fr": Cues(
        callback=r"""\b(?:
            rappel\w* | (?:me|nous)\s+(?:joindre|rappeler|appeler|contacter)
          | joignable | appele[zr][-\s](?:moi|nous) | contacte[zr][-\s](?:moi|nous)
          | (?:mon|notre|le)\s+(?:num[ée]ro|t[ée]l[ée]phone|portable|mobile|fixe)
        )\b""",
        extension=r"\b(?:poste|extension)",
        other_number=r"""\b(?:commande|compte|facture|r[ée]f[ée]rence|carte|cr[ée]dit|contrat
            |client|dossier|suivi|s[ée]curit[ée]\s+sociale|r[ée]servation|iban|colis|ticket
            |sinistre|adh[ée]rent)\b""",
    ),
    "de": Cues(
        callback=r"""\b(?:
            zur[üu]ckruf\w* | r[üu]ckruf\w* | ruf(?:en)?\s+(?:sie\s+)?(?:mich|uns)
          | erreich(?:en|bar)\w* | (?:meine|unsere|die)\s+(?:telefon|handy|mobil|ruf)?nummer
          | unter\s+der\s+nummer
        )\b""",
        extension=r"\b(?:durchwahl|apparat|nebenstelle)",
        other_number=r"""\b(?:bestell\w*|konto\w*|rechnung\w*|referenz\w*|kreditkart\w*|karte
            |kartennummer|vertrag\w*|kunde\w*|sendung\w*|iban|buchung\w*|aktenzeichen
            |versicherung\w*|auftrag\w*|ticket\w*)\b""",
    ),
    "pt": Cues(
        callback=r"""\b(?:
            lig(?:ue|a|ar)(?:[-\s](?:me|nos))? | me\s+lig(?:ue|a|ar|uem)
          | retorn(?:e|ar|em)\w* | (?:me|nos)\s+(?:contatar|contactar|retornar)
          | (?:meu|nosso|o)\s+(?:n[uú]mero|telefone|celular|contato|telem[oó]vel)
        )\b""",
        extension=r"\b(?:ramal|extens[aã]o)",
        other_number=r"""\b(?:pedido|conta|fatura|refer[eê]ncia|cart[aã]o|cr[eé]dito|contrato
            |cliente|protocolo|cpf|rg|iban|reserva|encomenda|ap[oó]lice|ticket)\b""",
    ),
    "it": Cues(
        callback=r"""\b(?:
            richiam\w* | chiam(?:ami|atemi|armi|arci|i) | contatt(?:ami|atemi|armi|arci)
          | (?:il\s+)?(?:mio|nostro)\s+(?:numero|telefono|cellulare)
        )\b""",
        extension=r"\b(?:interno|estensione)",
        other_number=r"""\b(?:ordine|conto|fattura|riferimento|carta|credito|contratto|cliente
            |pratica|codice|iban|prenotazione|polizza|ticket)\b""",
    ),
    "nl": Cues(
        callback=r"""\b(?:
            bel\s+(?:me|mij|ons)(?:\s+terug)? | terugbel\w* | terug\s+bellen
          | (?:mijn|ons|het)\s+(?:telefoon|mobiele\s+|gsm-?)?nummer | bereikbaar
        )\b""",
        extension=r"\b(?:toestel|extensie)",
        other_number=r"""\b(?:bestel\w*|order\w*|rekening\w*|factuur\w*|referentie\w*|kaart
            |creditcard|klant\w*|contract\w*|iban|boeking\w*|polis\w*|dossier\w*)\b""",
    ),
    "da": Cues(
        callback=r"""\b(?:
            ring\s+(?:mig|os)(?:\s+tilbage)? | (?:mit|vores)\s+(?:telefon|mobil)?nummer
          | kontakt\s+(?:mig|os) | fange\s+mig
        )\b""",
        extension=r"\b(?:lokal)",
        other_number=r"""\b(?:ordre\w*|konto\w*|faktura\w*|reference\w*|kort|kortnummer
            |kunde\w*|cpr|iban|booking\w*|police\w*|sag\w*)\b""",
    ),
}


@dataclass(frozen=True)
class _Patterns:
    callback: re.Pattern[str]
    extension: re.Pattern[str]  # at the end of the text before a run
    other_number: re.Pattern[str]  # in the text before a run, within its sentence


def _compile(cues: Cues) -> _Patterns:
    return _Patterns(
        callback=re.compile(cues.callback, _FLAGS),
        extension=re.compile(cues.extension + r"\W*$", _FLAGS),
        other_number=re.compile(cues.other_number + r"[^.?!]{0,30}$", _FLAGS),
    )


_PATTERNS = {code: _compile(cues) for code, cues in CUES.items()}
# Languages without cues of their own: no cue, only the runs that look like a number.
_NO_CUES = _Patterns(
    callback=re.compile(r"(?!)"), extension=re.compile(r"(?!)"), other_number=re.compile(r"(?!)")
)


def find_callback_number(
    text: str, *, language: str | None = None, regions: Iterable[str | None] = ()
) -> str | None:
    """The call-back number in ``text`` in E.164, or None (see the module docs).

    ``regions`` are the ISO 3166 regions to read a number without its country code in,
    in order (the bot's, the caller's); None in it is skipped.
    """
    found = find_callback(text, language=language, regions=regions)
    return found[1] if found is not None else None


def find_callback(
    text: str, *, language: str | None = None, regions: Iterable[str | None] = ()
) -> tuple[DigitRun, str] | None:
    """The call-back number's digit run in ``text`` and the number in E.164, or None."""
    wanted = [region for region in dict.fromkeys(regions) if region]
    for run in callback_candidates(text, language=language):
        number = to_e164(run, wanted)
        if number is not None:
            return run, number
    return None


def callback_run(text: str, *, language: str | None = None) -> DigitRun | None:
    """The first candidate digit run for the call-back number (not checked as a number)."""
    return next(callback_candidates(text, language=language), None)


def callback_candidates(text: str, *, language: str | None = None) -> Iterator[DigitRun]:
    """The digit runs of ``text`` that may be the call-back number, best first."""
    patterns = _PATTERNS.get(language_code(language), _NO_CUES)
    runs = [
        run
        for run in digit_runs(text, language)
        if not patterns.extension.search(text[: run.start])
    ]
    given: set[DigitRun] = set()
    for cue in patterns.callback.finditer(text):
        for run in runs:
            if run.start < cue.end():
                continue
            if run.start - cue.end() > CUE_REACH_CHARS:
                break
            if patterns.other_number.search(text[cue.end() : run.start]):
                break  # "call me back; my order number is ...": not this cue's number
            if MIN_DIGITS <= len(run.digits) <= MAX_DIGITS and run not in given:
                given.add(run)
                yield run
    plausible = [
        run
        for run in runs
        if MIN_DIGITS <= len(run.digits) <= (MAX_DIGITS if run.plus else MAX_DIGITS_WITHOUT_CUE)
        and not patterns.other_number.search(
            text[max(0, run.start - OTHER_NUMBER_REACH_CHARS) : run.start]
        )
        and run not in given
    ]
    # The longest first; of equally long ones, the first said (a stable sort).
    yield from sorted(plausible, key=lambda run: -len(run.digits))


def to_e164(run: DigitRun, regions: Iterable[str]) -> str | None:
    """``run`` as a valid number in E.164, read as said ("+44 ...") or in the first of
    ``regions`` where it is valid; None when it is valid nowhere it can be read."""
    attempts: list[str | None] = [None] if run.plus else []
    attempts += list(regions)
    for region in attempts:
        try:
            parsed = phonenumbers.parse(run.number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


def caller_region(caller: str | None) -> str | None:
    """The region of the caller's own number when it is a valid international number
    ("+34 612 345 678" is ES), else None: a caller's number without its country code says
    nothing certain about where the caller is."""
    if not caller or not caller.strip().startswith("+"):
        return None
    try:
        parsed = phonenumbers.parse(caller, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    region: str | None = phonenumbers.region_code_for_number(parsed)
    return region


def display_number(number: str | None) -> str | None:
    """A number for people to read: a valid international number in its international
    format ("+1 212-555-0199"); anything else as it is."""
    if not number or not number.strip().startswith("+"):
        return number
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    if not phonenumbers.is_valid_number(parsed):
        return number
    shown: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return shown
