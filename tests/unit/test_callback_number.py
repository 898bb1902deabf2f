"""The call-back number and the digit runs under it, over many phrasings and languages, and
its E.164 form (no model)."""

from __future__ import annotations

import pytest

from voicemail.transcription.callback import (
    callback_run,
    caller_region,
    display_number,
    find_callback_number,
)
from voicemail.transcription.digits import SPOKEN_NUMBER_LANGUAGES, digit_runs


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("555-123-4567", "5551234567"),
        ("(555) 123 4567", "5551234567"),
        ("555.123.4567", "5551234567"),
        ("5-5-5, 1-2-3, 4-5-6-7.", "5551234567"),
        ("five five five, one two three, four five six seven", "5551234567"),
        ("Five, five, five. One, two, three. Four, five, six, seven.", "5551234567"),
        ("five five five oh one oh oh", "5550100"),
        ("double five, triple seven", "55777"),
        ("double 5 1 2", "5512"),
        ("fifty five, sixty-five", "5565"),
        ("eight hundred five five five", "800555"),
        ("five five five, uh, one two three four", "5551234"),
        ("zero two zero", "020"),
    ],
)
def test_digit_runs_read_numerals_and_words(text: str, digits: str) -> None:
    assert [run.digits for run in digit_runs(text)] == [digits]


def test_digit_runs_keep_their_place_in_the_text() -> None:
    text = "Hi, call +44 20 7946 0958 today"
    (run,) = digit_runs(text)
    assert run.number == "+442079460958"
    assert text[run.start : run.end] == "+44 20 7946 0958"


@pytest.mark.parametrize(
    "text",
    [
        "Oh, hi, it's Sam.",
        "No one is home, so.",  # "one" is one digit, not a number
        "Oh well, oh dear.",
    ],
)
def test_oh_alone_is_not_zero(text: str) -> None:
    assert all(run.digits != "0" for run in digit_runs(text) if run.digits.startswith("0"))
    assert callback_run(text) is None


@pytest.mark.parametrize(
    ("text", "number"),
    [
        # The classic spoken forms.
        (
            "Hi, it's Sam. Call me back at five five five, one two three, four five six seven.",
            "5551234567",
        ),
        ("My number is 555-123-4567.", "5551234567"),
        ("You can reach me on 07700 900123, thanks.", "07700900123"),
        ("Please call me back at (212) 555-0199 extension 42.", "2125550199"),
        ("Call me at +44 20 7946 0958.", "+442079460958"),
        (
            "Reach me on plus four four, two oh, seven nine four six, oh nine five eight.",
            "+442079460958",
        ),
        ("my cell is double five five, one two three four", "5551234"),
        ("the best number is eight hundred, five five five, one two one two", "8005551212"),
        ("Give me a call back on 5 5 5 1 2 3 4 when you can.", "5551234"),
        ("It's Dana, my callback number is 212 555 0100.", "2125550100"),
        ("Text me at 415-555-2671.", "4155552671"),
        # No cue: the longest plausible run.
        ("Hi, it's Sam, 555-123-4567, about my order.", "5551234567"),
        ("Hi, this is Jo, 555 1234. Press 1 if you can.", "5551234"),
        # A cue wins over a longer run elsewhere.
        (
            "Order 12345678901, and call me back at 555 0100 please.",
            "5550100",
        ),
        # A number said before the cue: no run after the cue, so the longest.
        ("555-123-4567, please call me back.", "5551234567"),
        # 13-15 digits with a cue is an international number, not a card.
        ("Call me back at 0044 20 7946 0958.", "00442079460958"),
    ],
)
def test_callback_number_is_found(text: str, number: str) -> None:
    """The digits chosen, as said (whether they make a valid number is checked after)."""
    run = callback_run(text)
    assert run is not None and run.number == number


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Please leave your message after the tone.",
        "Press 1 to record, press 2 to listen, press 3 to rerecord.",  # single digits apart
        "My card number is 4111 1111 1111 1111, please charge it.",  # 16 digits, no cue
        "four one one one one one one one one one one one one one one one",  # spoken card
        "Just ask for extension 4567.",  # an extension alone
        "It's about order number 12345678.",  # another kind of number
        "Call me back tomorrow. My order number is 12345678.",
        "My account is 00123456 and I was double charged.",
        "Call me back at 4 o'clock.",  # a time, too short
        "My social security number is 123 45 6789.",
    ],
)
def test_no_callback_number(text: str) -> None:
    assert callback_run(text) is None
    assert find_callback_number(text, regions=["US"]) is None


def test_card_after_cue_is_not_a_phone_number() -> None:
    # 16 digits exceed E.164's 15 even after a cue.
    assert callback_run("Call me back at 4111 1111 1111 1111.") is None


def test_callback_run_spans_the_number_in_the_text() -> None:
    text = "Hey, call me back at five five five, one two three four. Bye."
    run = callback_run(text)
    assert run is not None
    assert text[run.start : run.end] == "five five five, one two three four"


# -- other languages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "text", "digits"),
    [
        ("es", "cuatro cinco cinco seis, siete tres siete cinco", "45567375"),
        ("es", "seis uno dos, treinta y cuatro, cincuenta y seis, setenta y ocho", "612345678"),
        ("es", "veintitrés, cuatro mil", "234000"),
        ("es", "doble cinco, triple siete, eh, dieciséis", "5577716"),
        ("fr", "zéro six, douze, trente-quatre, quatre-vingt-dix-neuf", "06123499"),
        ("fr", "double six, soixante et onze", "6671"),
        ("de", "null eins fünf eins, dreiundzwanzig, äh, vierhundertfünf", "015123405"),
        ("pt", "nove meia dois, três meia", "96236"),
        ("it", "tre quattro sette, doppio uno, ventitré", "3471123"),
        ("nl", "nul zes, een twee drie, dubbel vier", "0612344"),
        ("da", "to otte, femogtyve, dobbelt tre", "282533"),
        # Numerals in any script, in any language.
        ("ja", "電話は090-1234-5678です", "09012345678"),
        ("ar", "رقمي ٠٥٥ ١٢٣ ٤٥٦٧", "0551234567"),
    ],
)
def test_digit_runs_read_numbers_spoken_in_other_languages(
    language: str, text: str, digits: str
) -> None:
    assert [run.digits for run in digit_runs(text, language)] == [digits]


def test_spoken_numbers_are_read_in_the_transcripts_language_only() -> None:
    # English number words are not Spanish; "o" is Spanish for "or", not zero.
    assert [run.digits for run in digit_runs("five five five", "es")] == []
    assert [run.digits for run in digit_runs("cinco o seis", "es")] == ["5", "6"]
    # Words the language uses otherwise are no digits: "un momento", "ein Moment".
    assert digit_runs("un momento, por favor", "es") == []
    assert digit_runs("Warten Sie einen Moment", "de") == []
    assert digit_runs("meia hora", "pt") == []  # "meia" is six only next to a number
    assert set(SPOKEN_NUMBER_LANGUAGES) >= {"en", "es", "fr", "de", "pt", "it", "nl"}


def test_a_run_in_another_language_keeps_its_place_and_its_plus() -> None:
    text = "Llámame al más treinta y cuatro, seis uno dos, tres cuatro cinco, seis siete ocho."
    (run,) = digit_runs(text, "es")
    assert run.number == "+34612345678"
    assert text[run.start : run.end] == (
        "más treinta y cuatro, seis uno dos, tres cuatro cinco, seis siete ocho"
    )


@pytest.mark.parametrize(
    ("language", "region", "text", "number"),
    [
        (
            "es",
            "ES",
            "Hola, soy Ana. Llámame al seis uno dos, treinta y cuatro, cincuenta y seis, "
            "setenta y ocho. Mi pedido es el cuatro cinco seis siete ocho nueve uno dos.",
            "+34612345678",
        ),
        ("es", "ES", "Mi número es el 612 34 56 78, gracias.", "+34612345678"),
        # A cue's number wins over a longer order number said before it.
        (
            "es",
            "MX",
            "Sobre la factura 123456789012, devuélvame la llamada al cinco cinco, "
            "uno dos tres cuatro, cinco seis siete ocho.",
            "+525512345678",
        ),
        (
            "fr",
            "FR",
            "Bonjour, rappelez-moi au zéro six, douze, trente-quatre, cinquante-six, "
            "soixante-dix-huit. Merci.",
            "+33612345678",
        ),
        (
            "de",
            "DE",
            "Rufen Sie mich bitte zurück unter null eins fünf eins, zwei drei vier fünf, "
            "sechs sieben acht neun.",
            "+4915123456789",
        ),
        (
            "pt",
            "BR",
            "Me liga no onze, nove meia dois, três quatro, cinco meia sete oito.",
            "+5511962345678",
        ),
        (
            "it",
            "IT",
            "Mi richiami al tre quattro sette, uno due tre, quattro cinque sei sette.",
            "+393471234567",
        ),
        (
            "nl",
            "NL",
            "Bel me terug op nul zes, een twee drie vier, vijf zes zeven acht.",
            "+31612345678",
        ),
        (
            "da",
            "DK",
            "Ring mig tilbage på tyve, tolv, fireogtredive, seksoghalvtreds.",
            "+4520123456",
        ),
    ],
)
def test_callback_number_in_other_languages_in_e164(
    language: str, region: str, text: str, number: str | None
) -> None:
    assert find_callback_number(text, language=language, regions=[region]) == number


# -- E.164: read in the bot's region, invalid numbers never offered -----------------------


@pytest.mark.parametrize(
    ("regions", "text", "number"),
    [
        (["US"], "Call me back at (212) 555-0199 extension 42.", "+12125550199"),
        (
            ["US"],
            "It's Dana, my callback number is two one two, five five five, oh one hundred.",
            "+12125550100",
        ),
        # The same words are a UK number for a bot in GB.
        (["GB"], "Please ring me back on 020 7946 0958, thanks.", "+442079460958"),
        (["GB"], "Call me back at 0044 20 7946 0958.", "+442079460958"),
        (
            ["GB"],
            "my mobile is oh seven nine one one, one two three four five six",
            "+447911123456",
        ),
        (["US"], "my mobile is oh seven nine one one, one two three four five six", None),
        # Said with the country code: no region needed.
        (
            [],
            "Reach me on plus four four, two oh, seven nine four six, oh nine five eight.",
            "+442079460958",
        ),
        ([], "Call me at +1 415 555 0134.", "+14155550134"),
        # Without one, a national number cannot be read, so none is offered.
        ([], "Call me back at (212) 555-0199.", None),
        # The second region when the first does not make it valid (the caller's country).
        (["US", "GB"], "Call me back on 07911 123456.", "+447911123456"),
        # Invalid numbers are not offered: a 555 area code, 7 digits with no area code,
        # one digit too many.
        (["US"], "My number is 555-123-4567.", None),
        (["US"], "Hi, this is Jo, call me on 555 1234.", None),
        (["US"], "Call me back at 212 555 01999.", None),
        # An invalid number after the cue, a valid one later: the valid one.
        (["US"], "Call me back at 555-123-4567, or my office, 415 555 0134.", "+14155550134"),
    ],
)
def test_callback_number_in_e164_in_the_bots_region(
    regions: list[str], text: str, number: str | None
) -> None:
    assert find_callback_number(text, regions=regions) == number


def test_callers_region_and_display() -> None:
    assert caller_region("+34 612 345 678") == "ES"
    assert caller_region("+442079460958") == "GB"
    for caller in (None, "", "612345678", "+15550100", "anonymous", "sip:alice@example.com"):
        assert caller_region(caller) is None
    assert display_number("+14155550134") == "+1 415-555-0134"
    assert display_number("+442079460958") == "+44 20 7946 0958"
    for shown in (None, "+15550100", "anonymous", "5551234567"):
        assert display_number(shown) == shown
