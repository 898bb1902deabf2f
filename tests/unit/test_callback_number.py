"""The call-back number and the digit runs under it, over many phrasings (no model)."""

from __future__ import annotations

import pytest

from voicemail.transcription.callback import callback_run, find_callback_number
from voicemail.transcription.digits import digit_runs


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
    assert find_callback_number(text) is None


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
    assert find_callback_number(text) == number


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
    assert find_callback_number(text) is None


def test_card_after_cue_is_not_a_phone_number() -> None:
    # 16 digits exceed E.164's 15 even after a cue.
    assert find_callback_number("Call me back at 4111 1111 1111 1111.") is None


def test_callback_run_spans_the_number_in_the_text() -> None:
    text = "Hey, call me back at five five five, one two three four. Bye."
    run = callback_run(text)
    assert run is not None
    assert text[run.start : run.end] == "five five five, one two three four"
