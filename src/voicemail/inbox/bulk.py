"""Bulk actions of the inbox list: take, assign or handle the checked voicemails at once.

Each voicemail is checked on its own, as if its own button were pressed: the user must
see it (``get_visible_voicemail``, locked ``for_update``), and the action's rules apply
(whom their role may assign to, a handled voicemail is not handled twice). Each runs in a
savepoint, so one refused voicemail does not undo the others; the summary says what was
done and what was not, and why ("3 taken, 1 already handled by Ana Lima at …").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from voicemail.db.models import User
from voicemail.errors import BadRequest, Conflict, NotFound
from voicemail.inbox import actions
from voicemail.inbox.service import get_visible_voicemail

MAX_BULK = 200  # voicemails in one bulk action (four list pages)
TAKE, ASSIGN, HANDLE = "take", "assign", "handle"
BULK_ACTIONS = (TAKE, ASSIGN, HANDLE)
_DONE = {TAKE: "taken", ASSIGN: "assigned", HANDLE: "handled"}


@dataclass
class Summary:
    action: str
    done: int = 0
    unchanged: int = 0  # taken already by this user
    refused: Counter[str] = field(default_factory=Counter)  # reason → how many

    @property
    def message(self) -> str:
        parts = [f"{self.done} {_DONE[self.action]}"]
        if self.unchanged:
            parts.append(f"{self.unchanged} yours already")
        parts += [f"{count} {reason}" for reason, count in self.refused.items()]
        return ", ".join(parts)

    @property
    def complete(self) -> bool:
        return not self.refused


def apply(
    session: Session,
    *,
    user: User,
    voicemail_ids: list[str],
    action: str,
    target: str = "",
    disposition: str = "",
    custom: str = "",
) -> Summary:
    """Do ``action`` to each voicemail; BadRequest (nothing done) for a bad request."""
    if action not in BULK_ACTIONS:
        raise BadRequest("Choose take, assign or handle")
    wanted = list(dict.fromkeys(voicemail_ids))  # once each, in the order given
    if not wanted:
        raise BadRequest("Check at least one voicemail")
    if len(wanted) > MAX_BULK:
        raise BadRequest(f"At most {MAX_BULK} voicemails at once")
    if action == HANDLE and disposition not in actions.DISPOSITIONS:
        raise BadRequest(f"Disposition must be one of: {', '.join(actions.DISPOSITIONS)}")
    summary = Summary(action)
    for voicemail_id in wanted:
        try:
            with session.begin_nested():
                _one(session, user, voicemail_id, action, target, disposition, custom, summary)
        except NotFound:
            summary.refused["not found"] += 1
        except actions.TakenAlready as exc:
            summary.refused[_lower_first(str(exc))] += 1
        except Conflict:
            # Handle: handled already (by someone, maybe this user a moment ago).
            voicemail = get_visible_voicemail(session, user=user, voicemail_id=voicemail_id)
            summary.refused[f"already {actions.who_has_it(session, voicemail=voicemail)}"] += 1
        except BadRequest as exc:
            if not summary.done and not summary.refused:
                raise  # the same for every voicemail (a target they may not use)
            summary.refused[_lower_first(str(exc))] += 1
    return summary


def _one(
    session: Session,
    user: User,
    voicemail_id: str,
    action: str,
    target: str,
    disposition: str,
    custom: str,
    summary: Summary,
) -> None:
    voicemail = get_visible_voicemail(
        session, user=user, voicemail_id=voicemail_id, for_update=True
    )
    if action == TAKE:
        if actions.take(session, user=user, voicemail=voicemail):
            summary.done += 1
        else:
            summary.unchanged += 1
        return
    if action == ASSIGN:
        actions.assign(session, user=user, voicemail=voicemail, target=target)
    else:
        actions.handle(
            session,
            user=user,
            voicemail=voicemail,
            disposition=disposition,
            custom=custom,
            note=None,  # its notes stay as they are
        )
    summary.done += 1


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
