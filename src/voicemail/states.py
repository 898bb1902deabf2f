"""Where things stand: the statuses and states the database stores and the API shows.

One module at the bottom of the house, so that the models (their column defaults) and
every layer above them name a state the same way, without importing a service for a
string. Each is a ``StrEnum``: a member is its string, so the database, the JSON and the
logs hold the same values as before (``"stored"``, ``"pending"``), and a value read back
from a column compares equal to its member. The migrations keep their own literals: they
describe the schema as it was when they were written.

Test a plain string with ``value in tuple(Enum)``, not ``value in Enum``: on Python 3.11
the latter raises for a string that is no member.
"""

from __future__ import annotations

from enum import StrEnum


class VoicemailStatus(StrEnum):
    """``Voicemail.status``."""

    RECEIVING = "receiving"  # a live call still streaming into it: not a voicemail yet
    STORED = "stored"


class TranscriptionStatus(StrEnum):
    """The fetch API's ``transcriptionStatus`` (derived from the transcript and the job,
    not stored)."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"  # the job has no attempts left
    NOT_REQUESTED = "not_requested"


class InboxState(StrEnum):
    """Where a voicemail stands in the inbox (``Voicemail.inbox_state``)."""

    NEW = "new"
    ASSIGNED = "assigned"  # someone has it
    HANDLED = "handled"  # with a disposition


UNHANDLED = (InboxState.NEW, InboxState.ASSIGNED)
# The inbox list's state filter also takes this one: any unhandled state.
OPEN = "open"


class JobStatus(StrEnum):
    """``Job.status``: queued → running → completed, or failed (retried while attempts
    remain)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class DeliveryStatus(StrEnum):
    """``WebhookDelivery.status``: pending → delivered | failed (gave up) | cancelled (the
    voicemail it is about was deleted before it was sent); redelivery makes a delivered or
    failed one pending."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Role(StrEnum):
    """``User.role`` of an inbox user."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class CallOutcome(StrEnum):
    """How finalizing a live call ended. Not stored, and not a ``VoicemailStatus``: a
    dropped call leaves no voicemail at all."""

    STORED = "stored"  # it became a voicemail
    DROPPED = "dropped"  # too little audio: its receiving row is deleted
