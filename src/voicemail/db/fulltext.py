"""Full-text search over transcripts: SQLite FTS5 and PostgreSQL ``tsvector``.

Migration 0003 builds the index, outside the models (the ORM never writes it):
- SQLite: the FTS5 table ``transcripts_fts(voicemail_id, text)``, kept in step with
  ``transcripts`` by triggers (its rowids are its own: ``transcripts`` has no integer key, so
  the id is an indexed column that a trigger finds with a MATCH).
- PostgreSQL: the generated column ``transcripts.search_vector`` (``to_tsvector('simple',
  text)``: no stemming, as voicemails come in many languages) with a GIN index.

Both match every word of the query as a prefix ("refund" finds "refunds"), in any order.

Deletion. FTS5 deletes a row's tokens only by adding delete markers: the words of a deleted
transcript stay readable in the index's segments (``transcripts_fts_data``) until their
segments are merged. ``forget_deleted`` merges them all at once ('optimize') in the
transaction that deleted transcripts, so a deleted transcript leaves no word behind. It
rewrites the whole index, once per delete request or purge batch, under the write lock: a
session's DELETE took 0.15 s with 10 000 transcripts of 60 words and 0.85 s with 100 000
(0.003 s and 0.015 s without it) on the shared 2-core development machine. SQLite 3.42's
'secure-delete' option would do it per row, but the SQLite we run on may be older (3.40 on
Debian 12). PostgreSQL's ``tsvector`` is a column of the transcript's row and goes with it.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, Select, literal_column, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from voicemail.db.models import Transcript

FTS_TABLE = "transcripts_fts"
SEARCH_COLUMN = "search_vector"
SEARCH_INDEX = "ix_transcripts_search_vector"
MAX_TERMS = 12

_WORD = re.compile(r"\w+", re.UNICODE)


def terms(query: str) -> list[str]:
    """The words of a user's query (punctuation and operators are not syntax to us)."""
    return _WORD.findall(query.lower())[:MAX_TERMS]


def matching_ids(dialect: Dialect, query: str) -> Select[Any] | None:
    """A SELECT of the voicemail ids whose transcript matches every word; None when the
    query has no words (the caller then does not filter)."""
    words = terms(query)
    if not words:
        return None
    if dialect.name == "postgresql":
        tsquery = " & ".join(f"{word}:*" for word in words)
        vector: ColumnElement[object] = literal_column(f"transcripts.{SEARCH_COLUMN}")
        return select(Transcript.voicemail_id).where(
            vector.op("@@")(text("to_tsquery('simple', :tsquery)").bindparams(tsquery=tsquery))
        )
    # FTS5: each word a quoted prefix term, within the text column only.
    match = "text : (" + " ".join(f'"{word}"*' for word in words) + ")"
    return (
        select(literal_column("voicemail_id", type_=Transcript.voicemail_id.type))
        .select_from(text(FTS_TABLE))
        .where(text(f"{FTS_TABLE} MATCH :match").bindparams(match=match))
    )


def forget_deleted(session: Session) -> None:
    """After deleting transcripts, in the same transaction: drop their words from the index
    for good (see the module doc). Nothing to do on PostgreSQL."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("INSERT INTO transcripts_fts(transcripts_fts) VALUES ('optimize')"))


def is_index_object(name: str | None) -> bool:
    """Whether a schema object is the search index, which the models leave out (for
    autogenerate's comparison)."""
    return bool(name) and (str(name).startswith(FTS_TABLE) or name in (SEARCH_COLUMN, SEARCH_INDEX))
