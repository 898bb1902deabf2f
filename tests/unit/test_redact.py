"""Redaction of cards, SSNs and e-mail addresses, and the bot's post-processing (no model)."""

from __future__ import annotations

import pytest

from voicemail.transcription.postprocess import post_process
from voicemail.transcription.redact import KINDS, find_spans, redact_transcript
from voicemail.transcription.segments import Word


def words_of(text: str, step: float = 0.5) -> list[Word]:
    """Stored-style words (no surrounding spaces), ``step`` seconds apart."""
    return [
        Word(token, round(i * step, 3), round(i * step + 0.4, 3), 0.9)
        for i, token in enumerate(text.split())
    ]


def redacted_text(text: str, kinds: tuple[str, ...] = KINDS, language: str | None = None) -> str:
    return redact_transcript(text, words_of(text), kinds, language=language).text


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My card is 4111 1111 1111 1111.", "My card is [card]."),
        ("Card 4111-1111-1111-1111 expires soon", "Card [card] expires soon"),
        ("It's 4111111111111111, thanks", "It's [card], thanks"),
        ("Amex 3782 822463 10005 please", "Amex [card] please"),  # 15 digits, 4-6-5
        ("The old Visa 4222222222222 works", "The old Visa [card] works"),  # 13 digits
        (
            "four one one one, one one one one, one one one one, one one one one, bye",
            "[card], bye",
        ),
        # Not Luhn-valid (one misheard digit): redacted all the same.
        ("my card is 4111 1111 1111 1112", "my card is [card]"),
        # Run into its expiry: still redacted, whole.
        ("card 4111 1111 1111 1111 12 27 thanks", "card [card] thanks"),
        # Too short for a card.
        ("order 1234 5678 9012", "order 1234 5678 9012"),
    ],
)
def test_card_numbers(text: str, expected: str) -> None:
    assert redacted_text(text, ("card",)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SSN 123-45-6789.", "SSN [ssn]."),
        ("it's 123 45 6789 I think", "it's [ssn] I think"),  # the 3-2-4 shape alone
        ("My social security number is 123456789.", "My social security number is [ssn]."),
        (
            "my social is one two three, four five, six seven eight nine, okay",
            "my social is [ssn], okay",
        ),
        ("123456789 is my social security number", "[ssn] is my social security number"),
        # Nine digits with no cue, in another shape: left alone.
        ("Order 123456789 shipped", "Order 123456789 shipped"),
        ("call 555-123-4567", "call 555-123-4567"),
    ],
)
def test_social_security_numbers(text: str, expected: str) -> None:
    assert redacted_text(text, ("ssn",)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write to john.smith@example.com today.", "Write to [email] today."),
        ("Email jo_b+vm@mail.example.co.uk, thanks", "Email [email], thanks"),
        ("It's john dot smith at example dot com.", "It's [email]."),
        ("it's John.Smith at example.com okay", "it's [email] okay"),
        ("jane underscore doe at gmail dot com", "[email]"),
        ("my email is sam at acme dot io", "my email is [email]"),
        # A web address, not an e-mail: the "local part" is "me".
        ("you can reach me at acme dot com", "you can reach me at acme dot com"),
        ("I'll be at home at five", "I'll be at home at five"),
        # Any top-level domain, in any script.
        ("Napisz na anna@firma.pl, dzięki", "Napisz na [email], dzięki"),
        ("mail anna.nowak@poczta.onet.pl.", "mail [email]."),
        ("write to jo@shop.photography or jo@x.museum", "write to [email] or [email]"),
        ("josé@correo.españa escribe", "[email] escribe"),
        ("info@пример.рф", "[email]"),
        ("contact: hi@xn--80ak6aa92e.com", "contact: [email]"),
        ("anna at firma dot pl", "[email]"),
        ("it's anna.nowak at firma.pl okay", "it's [email] okay"),
        # A full stop after "at" is no domain's dot; nor is a number's.
        ("I was at home. Then I left.", "I was at home. Then I left."),
        ("see you at 5.30 tomorrow", "see you at 5.30 tomorrow"),
        ("version 2.0 at noon.", "version 2.0 at noon."),
        ("we met at the cafe.It was late", "we met at the cafe.It was late"),
    ],
)
def test_email_addresses(text: str, expected: str) -> None:
    assert redacted_text(text, ("email",)) == expected


@pytest.mark.parametrize(
    ("language", "text", "expected"),
    [
        ("es", "Mi correo es anna arroba firma punto pl, gracias", "Mi correo es [email], gracias"),
        ("es", "ana punto garcía arroba correo punto es", "[email]"),
        ("fr", "c'est marie point dupont arobase orange point fr", "c'est [email]"),
        ("de", "anna punkt schmidt at firma punkt de", "[email]"),
        ("pt", "joao arroba empresa ponto com ponto br", "[email]"),
        ("it", "marco chiocciola azienda punto it", "[email]"),
        ("nl", "jan apenstaartje bedrijf punt nl", "[email]"),
        # An English spelling in a transcript detected as another language.
        ("es", "sam dot jones at example dot com", "[email]"),
        # Written addresses in any language, with or without spoken words of its own.
        ("ja", "メールはanna@firma.plです", "メールは[email]です"),
        # A sentence's "punto" is no dot: "en punto" is "o'clock".
        ("es", "Llego a las cinco en punto. Nos vemos", "Llego a las cinco en punto. Nos vemos"),
    ],
)
def test_email_addresses_spoken_in_other_languages(language: str, text: str, expected: str) -> None:
    assert redacted_text(text, ("email",), language) == expected


@pytest.mark.parametrize(
    ("language", "text", "expected"),
    [
        (
            "es",
            "mi tarjeta es cuatro cinco cinco seis, siete tres siete cinco, ocho seis ocho "
            "nueve, nueve ocho cinco cinco, caduca en marzo",
            "mi tarjeta es [card], caduca en marzo",
        ),
        (
            "es",
            "la tarjeta cuarenta y cinco, cincuenta y seis, setenta y tres, setenta y cinco, "
            "ochenta y seis, ochenta y nueve, noventa y ocho, cincuenta y cinco.",
            "la tarjeta [card].",
        ),
        (
            "fr",
            "ma carte quatre cinq cinq six, sept trois sept cinq, huit six huit neuf, neuf "
            "huit cinq cinq merci",
            "ma carte [card] merci",
        ),
        (
            "de",
            "Karte vier fünf fünf sechs sieben drei sieben fünf acht sechs acht neun neun acht "
            "fünf fünf, danke",
            "Karte [card], danke",
        ),
        (
            "pt",
            "cartão quatro cinco cinco meia, sete três sete cinco, oito meia oito nove, nove "
            "oito cinco cinco",
            "cartão [card]",
        ),
        (
            "it",
            "carta quattro cinque cinque sei sette tre sette cinque otto sei otto nove nove "
            "otto cinque cinque grazie",
            "carta [card] grazie",
        ),
        (
            "nl",
            "kaart vier vijf vijf zes zeven drie zeven vijf acht zes acht negen negen acht "
            "vijf vijf",
            "kaart [card]",
        ),
        # Numerals are read in every language.
        ("ja", "カードは4556 7375 8689 9855です", "カードは[card]です"),
    ],
)
def test_card_numbers_spoken_in_other_languages(language: str, text: str, expected: str) -> None:
    assert luhn_valid("4556737586899855")  # a real card number's shape, not just 16 digits
    assert redacted_text(text, ("card",), language) == expected


def test_social_security_number_spoken_in_spanish() -> None:
    text = "mi seguro social es uno dos tres, cuatro cinco, seis siete ocho nueve"
    assert redacted_text(text, ("ssn",), "es") == "mi seguro social es [ssn]"


def test_only_the_chosen_kinds_are_redacted() -> None:
    text = "card 4111 1111 1111 1111, mail a@b.com, ssn 123-45-6789"
    assert redacted_text(text, ()) == text
    assert (
        redacted_text(text, ("email",)) == "card 4111 1111 1111 1111, mail [email], ssn 123-45-6789"
    )
    result = redact_transcript(text, words_of(text), ("card", "ssn", "email"))
    assert result.text == "card [card], mail [email], ssn [ssn]"
    assert result.kinds == ["card", "ssn", "email"]
    assert redact_transcript("nothing here", words_of("nothing here"), KINDS).kinds == []


def test_words_covered_become_one_placeholder_word_keeping_the_times() -> None:
    text = "My card is 4111 1111 1111 1111. Thanks"
    result = redact_transcript(text, words_of(text), ("card",))
    assert [(w.word, w.start, w.end) for w in result.words] == [
        ("My", 0.0, 0.4),
        ("card", 0.5, 0.9),
        ("is", 1.0, 1.4),
        ("[card].", 1.5, 3.4),  # first covered word's start, last one's end; "." kept
        ("Thanks", 3.5, 3.9),
    ]
    assert " ".join(w.word for w in result.words) == result.text


def test_spoken_email_in_words() -> None:
    text = "it's john dot smith at example dot com bye"
    result = redact_transcript(text, words_of(text), ("email",))
    assert [w.word for w in result.words] == ["it's", "[email]", "bye"]
    assert (result.words[1].start, result.words[1].end) == (0.5, 3.9)


def test_words_are_searched_on_their_own() -> None:
    """Text and words may differ in spacing; each is redacted in itself."""
    text = "Card: 4111 1111 1111 1111."
    words = [Word("Card:", 0, 0.4, 0.9), Word("4111-1111-1111-1111.", 0.5, 2.0, 0.8)]
    result = redact_transcript(text, words, ("card",))
    assert result.text == "Card: [card]."
    assert [w.word for w in result.words] == ["Card:", "[card]."]


def test_two_addresses_in_one_word() -> None:
    text = "a@b.com,c@d.com"
    result = redact_transcript(text, words_of(text), ("email",))
    assert result.text == "[email],[email]"
    assert [w.word for w in result.words] == ["[email],[email]"]


def test_spans_do_not_overlap() -> None:
    text = "SSN 123-45-6789 and card 4111 1111 1111 1111"
    spans = find_spans(text, KINDS)
    assert [(text[s.start : s.end], s.kind) for s in spans] == [
        ("123-45-6789", "ssn"),
        ("4111 1111 1111 1111", "card"),
    ]


# -- the bot's post-processing: call-back number first, then redaction ---------------


def test_callback_number_is_taken_before_redaction_and_kept() -> None:
    text = "Call me back at +44 20 7946 0958 or 0044 20 7946 0958. Card 4111 1111 1111 1111."
    result = post_process(text, words_of(text), redact=KINDS)
    assert result.callback_number == "+442079460958"
    assert "+44 20 7946 0958" in result.text  # the number the caller asked for stays
    assert result.text.endswith("Card [card].")
    assert result.redacted == ["card"]


def test_international_callback_number_is_never_redacted_as_a_card() -> None:
    # 14 digits: card-shaped, but it is the number to call back.
    text = "Please call me back at 0044 20 7946 0958, thanks."
    result = post_process(text, words_of(text), redact=("card",), region="GB")
    assert result.callback_number == "+442079460958"
    assert result.text == text
    assert result.redacted == []


def test_post_process_without_redaction() -> None:
    text = "It's Sam, my number is two one two, five five five, oh one nine nine."
    words = words_of(text)
    result = post_process(text, words, redact=(), region="US")
    assert (result.text, result.words, result.redacted) == (text, words, [])
    assert result.callback_number == "+12125550199"


def test_post_process_in_spanish() -> None:
    text = (
        "Hola, soy Ana. Llámame al seis uno dos, treinta y cuatro, cincuenta y seis, setenta y "
        "ocho. Mi tarjeta es cuatro cinco cinco seis siete tres siete cinco ocho seis ocho "
        "nueve nueve ocho cinco cinco y mi correo anna arroba firma punto pl."
    )
    result = post_process(text, words_of(text), redact=KINDS, language="es", region="ES")
    assert result.callback_number == "+34612345678"
    assert result.text == (
        "Hola, soy Ana. Llámame al seis uno dos, treinta y cuatro, cincuenta y seis, setenta y "
        "ocho. Mi tarjeta es [card] y mi correo [email]."
    )
    assert result.redacted == ["card", "email"]
    assert " ".join(w.word for w in result.words) == result.text


def test_post_process_reads_a_national_number_in_the_callers_country() -> None:
    text = "Please call me back on 07911 123456."
    # The bot has no region: the caller's own number says the UK.
    assert post_process(text, [], redact=(), caller="+44 20 7946 0958").callback_number == (
        "+447911123456"
    )
    # Neither: no country to read it in.
    assert post_process(text, [], redact=(), caller="07700900123").callback_number is None
    # The bot's region comes first.
    result = post_process(text, [], redact=(), region="US", caller="+442079460958")
    assert result.callback_number == "+447911123456"  # not valid in the US, valid in GB
    text = "Call me back at 212 555 0199."
    assert post_process(
        text, [], redact=(), region="US", caller="+442079460958"
    ).callback_number == ("+12125550199")


def test_an_invalid_number_is_neither_offered_nor_kept_from_redaction() -> None:
    # Not a valid number anywhere: no call-back number, and a card-long run is redacted.
    text = "Call me back at 0044 20 7946 09588."  # a digit too many
    result = post_process(text, words_of(text), redact=("card",), region="GB")
    assert result.callback_number is None
    assert result.text == "Call me back at [card]."
