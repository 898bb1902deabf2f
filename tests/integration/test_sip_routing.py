"""Who a SIP call reaches and who it says is calling (issue 11: mailboxes, forwarded calls,
caller identity, sessionId, digest authentication, metrics, audit, readiness).

The mailboxes are set with the real CLI on both databases; the calls are made by Debian's
``sipp`` playing the scenarios of ``tests/sip/`` against ``voicemail serve`` and
``voicemail sip`` processes, and what a call left is read through the Kore fetch API.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.helpers.cli import invoke_cli, ok_json, one_line_error
from voicemail.bots import service as bots
from voicemail.errors import Conflict
from voicemail.runtime import Runtime
from voicemail.settings import Settings

# Mailboxes ---------------------------------------------------------------------------------


def test_mailboxes_are_given_with_the_cli_and_cleared(settings: Settings, runtime: Runtime) -> None:
    bot = ok_json(invoke_cli(settings, "bots", "create", "Sales", "--json"))["botId"]
    configured = ok_json(
        invoke_cli(
            settings, "bots", "configure", bot, "--mailbox", "1001", "--mailbox", "Support",
            "--mailbox", "+15551230000", "--json",
        )
    )  # fmt: skip
    assert configured["mailboxes"] == ["1001", "support", "+15551230000"]
    # Again, with one more: what it has stays, once.
    again = ok_json(invoke_cli(settings, "bots", "configure", bot, "--mailbox", "1001",
                               "--mailbox", "1002", "--json"))  # fmt: skip
    assert again["mailboxes"] == ["1001", "support", "+15551230000", "1002"]
    with runtime.sessions() as session:
        assert bots.bots_for_mailbox(session, "SUPPORT") == [bot]
        assert bots.bots_for_mailbox(session, bot) == [bot]
        assert bots.bots_for_mailbox(session, "1003") == []
    replaced = ok_json(invoke_cli(settings, "bots", "configure", bot, "--clear-mailboxes",
                                  "--mailbox", "2001", "--json"))  # fmt: skip
    assert replaced["mailboxes"] == ["2001"]
    cleared = ok_json(invoke_cli(settings, "bots", "configure", bot, "--clear-mailboxes", "--json"))
    assert cleared["mailboxes"] == []
    listed = ok_json(invoke_cli(settings, "bots", "list", "--json"))
    assert listed["bots"][0]["mailboxes"] == []


def test_a_mailbox_of_another_bot_or_a_bad_one_is_a_clear_error(settings: Settings) -> None:
    first = ok_json(invoke_cli(settings, "bots", "create", "First", "--json"))["botId"]
    second = ok_json(invoke_cli(settings, "bots", "create", "Second", "--json"))["botId"]
    ok_json(invoke_cli(settings, "bots", "configure", first, "--mailbox", "1001", "--json"))
    taken = one_line_error(invoke_cli(settings, "bots", "configure", second, "--mailbox", "1001"))
    assert f"Mailbox 1001 already belongs to bot {first}" in taken
    for bad, says in (
        ("10 01", "Invalid mailbox"),
        ("x" * 65, "Invalid mailbox"),
        (second, "cannot be a bot id"),
    ):
        error = one_line_error(invoke_cli(settings, "bots", "configure", second, "--mailbox", bad))
        assert says in error
    # Nothing of a refused change was kept.
    listed = ok_json(invoke_cli(settings, "bots", "list", "--json"))["bots"]
    assert {b["botId"]: b["mailboxes"] for b in listed} == {first: ["1001"], second: []}


def test_two_bots_claiming_one_mailbox_at_once_one_gets_a_conflict(runtime: Runtime) -> None:
    """The second claim runs while the first is in its transaction, not yet committed: on
    PostgreSQL it passes the check, waits on the unique index and gets the constraint's
    answer, on SQLite it waits for the write lock and sees the first's row. Both: Conflict."""
    with runtime.sessions.begin() as session:
        first = bots.create_bot(session, name="First").id
        second = bots.create_bot(session, name="Second").id
    outcome: list[BaseException | None] = []

    def claim_second() -> None:
        try:
            with runtime.sessions.begin() as session:
                bots.set_mailboxes(session, bot_id=second, add=["1001"])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with runtime.sessions.begin() as session:
        bots.set_mailboxes(session, bot_id=first, add=["1001"])
        session.flush()
        racer = threading.Thread(target=claim_second)
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive()  # waiting for the first transaction
    racer.join(timeout=30)
    [error] = outcome
    assert isinstance(error, Conflict), error
    assert "Mailbox 1001 already belongs to" in error.message
    with runtime.sessions() as session:
        assert bots.bots_for_mailbox(session, "1001") == [first]


def test_a_mailbox_is_one_bot_per_account_but_may_repeat_across_accounts(
    runtime: Runtime, tmp_path: Path
) -> None:
    from voicemail.db.models import Account

    with runtime.sessions.begin() as session:
        session.add(Account(id="o-other", name="Other"))
        session.flush()
        ours = bots.create_bot(session, name="Ours").id
        theirs = bots.create_bot(session, name="Theirs", account_id="o-other").id
        bots.set_mailboxes(session, bot_id=ours, add=["1001"])
        bots.set_mailboxes(session, bot_id=theirs, add=["1001"])
    with runtime.sessions() as session:
        assert sorted(bots.bots_for_mailbox(session, "1001")) == sorted([ours, theirs])
        assert bots.bots_for_mailbox(session, "1001", account_id="o-other") == [theirs]
