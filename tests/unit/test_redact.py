"""Redaction of cards, SSNs and e-mail addresses, and the bot's post-processing (no model)."""

from __future__ import annotations

import pytest

from voicemail.transcription.engine import Word
from voicemail.transcription.postprocess import post_process
from voicemail.transcription.redact import KINDS, find_spans, redact_transcript


def words_of(text: str, step: float = 0.5) -> list[Word]:
    """Stored-style words (no surrounding spaces), ``step`` seconds apart."""
    return [
        Word(token, round(i * step, 3), round(i * step + 0.4, 3), 0.9)
        for i, token in enumerate(text.split())
    ]


def redacted_text(text: str, kinds: tuple[str, ...] = KINDS) -> str:
    return redact_transcript(text, words_of(text), kinds).text


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
    ],
)
def test_email_addresses(text: str, expected: str) -> None:
    assert redacted_text(text, ("email",)) == expected


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
    result = post_process(text, words_of(text), redact=("card",))
    assert result.callback_number == "00442079460958"
    assert result.text == text
    assert result.redacted == []


def test_post_process_without_redaction() -> None:
    text = "It's Sam, my number is five five five, one two three four."
    words = words_of(text)
    result = post_process(text, words, redact=())
    assert (result.text, result.words, result.redacted) == (text, words, [])
    assert result.callback_number == "5551234"
