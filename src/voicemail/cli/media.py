"""``voicemail media …``: signed media URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from voicemail.audit import service as audit
from voicemail.cli.output import JsonOpt, emit
from voicemail.cli.runtime import run_in_transaction
from voicemail.media import service as media

if TYPE_CHECKING:
    from voicemail.runtime import Runtime

app = typer.Typer(no_args_is_help=True)


@app.command("revoke-all")
def media_revoke_all(as_json: JsonOpt = False) -> None:
    """Invalidate every media URL issued so far (URLs minted afterwards work)."""

    def action(rt: Runtime, s: Any) -> int:
        epoch = media.revoke_all(s)
        audit.record_change(s, actor=audit.CLI, action=audit.MEDIA_REVOKE_ALL, epoch=epoch)
        return epoch

    epoch = run_in_transaction(action)
    emit(as_json, {"revoked": True, "epoch": epoch})
