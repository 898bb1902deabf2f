"""Where a secret is still stored: every column of the database, every file of a folder.

For the "deleted means deleted" tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class Copy:
    """Where ``copies_in_database`` or ``copies_in_folder`` found a needle."""

    where: str  # "table.column" or a file path
    needle: str


def _text_of(value: Any) -> str | None:
    """A stored value as searchable text: strings as they are, JSON as its text (and in
    its escaped form's source: a dict is dumped without ASCII escapes), bytes as UTF-8."""
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def copies_in_database(engine: Engine, needles: Iterable[str]) -> list[Copy]:
    """Every (table, column) of the database that holds one of ``needles``, read through
    SQL: all tables the database has (reflected, so the full-text index's tables and any
    column a later migration adds are searched too), every column, every row. For the
    "deleted means deleted" tests; meant for a test's small database."""
    from sqlalchemy import MetaData, select

    wanted = [needle for needle in needles if needle]
    assert wanted, "give at least one non-empty needle"
    metadata = MetaData()
    metadata.reflect(bind=engine)
    found: list[Copy] = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    text = _text_of(value)
                    if text is None:
                        continue
                    found += [
                        Copy(f"{table.name}.{column.name}", needle)
                        for needle in wanted
                        if needle in text
                    ]
    return sorted(set(found), key=lambda copy: (copy.where, copy.needle))


def copies_in_folder(folder: Path, needles: Iterable[str]) -> list[Copy]:
    """Every file under ``folder`` whose bytes hold one of ``needles`` (UTF-8)."""
    wanted = [needle.encode() for needle in needles if needle]
    assert wanted, "give at least one non-empty needle"
    found = []
    for path in sorted(folder.rglob("*")) if folder.exists() else []:
        if path.is_file():
            data = path.read_bytes()
            found += [Copy(str(path), needle.decode()) for needle in wanted if needle in data]
    return found
