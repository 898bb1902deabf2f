"""Moving an install's data to another database and storage (``voicemail migrate-data``).

The usual move is from the embedded install (SQLite + a folder) to PostgreSQL and S3. The
target database is migrated with Alembic, then the recordings are copied, then every table's
rows in foreign-key order, in batches, each batch committed; ids, timestamps and the
encrypted app secrets are copied as they are. Re-running is safe: recordings already in the
target with the same size are skipped, rows already there are left alone when equal and
brought up to date when not. A target that holds anything other than an earlier copy of
this install is refused, so a mistyped URL cannot mix two installs.

App secrets are encrypted with a key derived from ``VOICEMAIL_SIGNING_KEY`` (and media URLs
are signed with another), so the new deployment must use the same signing key. The copy
checks that the key it runs with decrypts every app secret of the source before it writes
anything, which catches the usual mistake: running it with the new deployment's new key.

The source is read in one snapshot (a read-only transaction), so a source that is still
serving gives a consistent copy; recordings are listed after the snapshot begins, and a
deposit stores its recording before committing its row, so every copied row finds its
recording. Stopping the old install first is still the procedure (see docs/deployment.md):
anything deposited after the snapshot is not copied.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    Table,
    create_engine,
    event,
    false,
    func,
    select,
)
from sqlalchemy.engine import make_url

from voicemail.db.base import Base
from voicemail.db.engine import make_engine, normalize_url
from voicemail.db.migrate import alembic_config, upgrade
from voicemail.db.models import App, Voicemail
from voicemail.errors import VoicemailError
from voicemail.security import SecretBox
from voicemail.settings import Settings
from voicemail.storage import Storage, local_copy
from voicemail.storage.base import StoredObject

# Recordings are copied in pieces this large when the source has no local file (e.g. S3),
# so a parallel copy holds at most ``parallel`` pieces in memory.

Progress = Callable[[str], None]


class TransferError(Exception):
    """The copy was refused or could not start; nothing was written that a re-run can't fix."""


@dataclass
class TableReport:
    name: str
    source_rows: int
    inserted: int = 0
    updated: int = 0
    target_rows: int = 0


@dataclass
class ObjectReport:
    source_objects: int = 0
    copied: int = 0
    skipped: int = 0  # already in the target with the same size
    bytes_copied: int = 0


@dataclass
class TransferReport:
    source_database: str  # without password
    target_database: str
    tables: list[TableReport] = field(default_factory=list)
    objects: ObjectReport = field(default_factory=ObjectReport)
    objects_moved: bool = True  # False when the recordings stay in the source storage
    sequences: dict[str, int] = field(default_factory=dict)  # "table.column" -> next value
    problems: list[str] = field(default_factory=list)  # verification failures
    seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return not self.problems

    @property
    def changed(self) -> bool:
        """Whether this run wrote anything (False: the target already was a full copy)."""
        return self.objects.copied > 0 or any(t.inserted or t.updated for t in self.tables)

    def as_json(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "changed": self.changed,
            "source": {"database": self.source_database},
            "target": {"database": self.target_database},
            "tables": [
                {
                    "table": t.name,
                    "sourceRows": t.source_rows,
                    "inserted": t.inserted,
                    "updated": t.updated,
                    "targetRows": t.target_rows,
                }
                for t in self.tables
            ],
            "recordings": {
                "moved": self.objects_moved,
                "sourceObjects": self.objects.source_objects,
                "copied": self.objects.copied,
                "skipped": self.objects.skipped,
                "bytesCopied": self.objects.bytes_copied,
            },
            "sequences": self.sequences,
            "problems": self.problems,
            "seconds": round(self.seconds, 3),
        }


def display_url(url: str) -> str:
    """A database URL without its password, for output."""
    return make_url(url).render_as_string(hide_password=True)


def _same_database(a: str, b: str) -> bool:
    url_a, url_b = make_url(normalize_url(a)), make_url(normalize_url(b))
    if url_a.get_backend_name() == "sqlite" and url_b.get_backend_name() == "sqlite":
        if not url_a.database or not url_b.database:
            return url_a.database == url_b.database  # both in-memory
        return Path(url_a.database).resolve() == Path(url_b.database).resolve()
    return url_a.render_as_string(hide_password=False) == url_b.render_as_string(
        hide_password=False
    )


def _snapshot_engine(url: str) -> Engine:
    """An engine whose transactions read one consistent snapshot and never block writers.

    Not ``make_engine``: on SQLite that begins every transaction IMMEDIATE (a write lock),
    which would stall a still-running source's deposits for the whole copy.
    """
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(
            url,
            pool_pre_ping=True,
            isolation_level="REPEATABLE READ",
            execution_options={"postgresql_readonly": True},
        )
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        dbapi_connection.execute("PRAGMA query_only=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred read transaction: in WAL mode it sees one snapshot from its first read.
        connection.exec_driver_sql("BEGIN")

    return engine


def _check_at_head(conn: Connection, what: str) -> None:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise TransferError(
            f"the {what} database schema is at revision {current or 'none'}, not {head}: "
            "run `voicemail db upgrade` on it first"
        )


def _primary_key(table: Table) -> Column[Any]:
    columns = list(table.primary_key.columns)
    if len(columns) != 1:  # every table has a one-column key; say so if one ever doesn't
        raise TransferError(f"table {table.name} has a composite primary key; not supported")
    return columns[0]


def _counts(conn: Connection, tables: Sequence[Table]) -> dict[str, int]:
    return {t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0) for t in tables}


def _batches(conn: Connection, table: Table, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """The table's rows in primary-key order, ``batch_size`` at a time, as plain dicts."""
    pk = _primary_key(table)
    result = conn.execution_options(stream_results=True, max_row_buffer=batch_size).execute(
        select(table).order_by(pk)
    )
    for part in result.mappings().partitions(batch_size):
        yield [dict(row) for row in part]


def check_signing_key(conn: Connection, box: SecretBox) -> None:
    """Refuse unless the key in use decrypts every app secret of the source."""
    for app_id, ciphertext in conn.execute(select(App.id, App.secret_ciphertext)):
        try:
            box.decrypt(ciphertext)
        except ValueError:
            raise TransferError(
                f"the signing key in use cannot decrypt the secret of app {app_id}: run "
                "migrate-data with this install's own signing key (VOICEMAIL_SIGNING_KEY, or "
                "signing.key in its data folder), and give the new deployment that same key"
            ) from None


def _check_only_earlier_copy(
    source: Connection, target: Connection, tables: Sequence[Table], batch_size: int
) -> None:
    """Refuse a target holding rows the source lacks: it is not (only) a copy of this install."""
    for table in tables:
        pk = _primary_key(table)
        result = target.execution_options(stream_results=True).execute(select(pk).order_by(pk))
        for part in result.scalars().partitions(batch_size):
            known = set(source.scalars(select(pk).where(pk.in_(part))))
            foreign = [value for value in part if value not in known]
            if foreign:
                raise TransferError(
                    f"the target's {table.name} table holds rows that are not in the source "
                    f"(e.g. {pk.name}={foreign[0]!r}): it holds data of another install, or "
                    "rows written since the copy; refusing to mix them"
                )


def _copy_table(
    source: Connection,
    target_engine: Engine,
    table: Table,
    report: TableReport,
    *,
    target_had_rows: bool,
    batch_size: int,
) -> None:
    pk = _primary_key(table)
    for rows in _batches(source, table, batch_size):
        with target_engine.begin() as target:
            existing: dict[Any, dict[str, Any]] = {}
            if target_had_rows:  # a fresh table needs no look-up: everything is new
                keys = [row[pk.name] for row in rows]
                found = target.execute(select(table).where(pk.in_(keys))).mappings()
                existing = {row[pk.name]: dict(row) for row in found}
            new_rows = [row for row in rows if row[pk.name] not in existing]
            if new_rows:
                target.execute(table.insert(), new_rows)
                report.inserted += len(new_rows)
            for row in rows:
                old = existing.get(row[pk.name])
                if old is not None and old != row:
                    target.execute(table.update().where(pk == row[pk.name]).values(row))
                    report.updated += 1


def _reset_sequences(conn: Connection, tables: Sequence[Table]) -> dict[str, int]:
    """After rows were inserted with their ids, make PostgreSQL hand out ids above them."""
    if conn.dialect.name != "postgresql":
        return {}  # SQLite's integer keys follow max(rowid) by themselves
    next_values: dict[str, int] = {}
    for table in tables:
        pk = _primary_key(table)
        if not isinstance(pk.type, Integer) or pk.autoincrement not in (True, "auto"):
            continue
        highest = select(func.max(pk)).scalar_subquery()
        value = conn.scalar(
            select(
                func.setval(
                    func.pg_get_serial_sequence(table.name, pk.name),
                    func.coalesce(highest, 0) + 1,
                    false(),  # the next nextval() returns this value itself
                )
            )
        )
        if value is not None:  # None: the column has no sequence
            next_values[f"{table.name}.{pk.name}"] = int(value)
    return next_values


def _listing(storage: Storage) -> dict[str, int]:
    return {obj.key: obj.size for obj in storage.iter_objects()}


def _copy_object(source: Storage, target: Storage, obj: StoredObject, scratch: Path) -> None:
    with local_copy(source, obj.key, scratch=scratch) as path:
        target.put_file(obj.key, path)


def _copy_objects(
    source: Storage,
    target: Storage,
    report: ObjectReport,
    *,
    parallel: int,
    progress: Progress,
) -> dict[str, int]:
    """Copy every recording the target lacks (or holds with another size); source sizes."""
    in_target = _listing(target)
    source_sizes: dict[str, int] = {}
    to_copy: list[StoredObject] = []
    for obj in source.iter_objects():
        source_sizes[obj.key] = obj.size
        if in_target.get(obj.key) == obj.size:
            report.skipped += 1
        else:
            to_copy.append(obj)
    report.source_objects = len(source_sizes)
    progress(f"recordings: {len(to_copy)} to copy, {report.skipped} already there")
    with (
        tempfile.TemporaryDirectory(prefix="voicemail-migrate-") as scratch,
        ThreadPoolExecutor(max_workers=parallel) as pool,
    ):
        # map() re-raises the first failure; objects copied before it stay (a re-run skips).
        for obj, _ in zip(
            to_copy,
            pool.map(lambda o: _copy_object(source, target, o, Path(scratch)), to_copy),
            strict=True,
        ):
            report.copied += 1
            report.bytes_copied += obj.size
            if report.copied % 500 == 0:
                progress(f"recordings: {report.copied}/{len(to_copy)} copied")
    return source_sizes


def _verify(
    source: Connection,
    target_engine: Engine,
    tables: Sequence[Table],
    report: TransferReport,
    *,
    recordings: Storage,
    source_sizes: Mapping[str, int],
    batch_size: int,
) -> None:
    source_counts = {t.name: t.source_rows for t in report.tables}
    with target_engine.connect() as target:
        target_counts = _counts(target, tables)
    for table_report in report.tables:
        table_report.target_rows = target_counts[table_report.name]
        if target_counts[table_report.name] != source_counts[table_report.name]:
            report.problems.append(
                f"{table_report.name}: {source_counts[table_report.name]} rows in the source, "
                f"{target_counts[table_report.name]} in the target"
            )
    # Every voicemail of the copy must find its recording, whole, where the target reads it.
    stored = _listing(recordings)
    missing: list[str] = []
    for rows in _batches(source, Base.metadata.tables[Voicemail.__tablename__], batch_size):
        for row in rows:
            key = row["storage_key"]
            if key not in stored:
                missing.append(f"{row['id']}: recording {key} is missing")
            elif key in source_sizes and stored[key] != source_sizes[key]:
                missing.append(f"{row['id']}: recording {key} differs in size from the source")
    if missing:
        report.problems.extend(missing[:20])
        if len(missing) > 20:
            report.problems.append(f"... and {len(missing) - 20} more recordings")


def _check_storage(storage: Storage) -> None:
    """Refuse a target storage that cannot be written (a missing bucket, a read-only folder)."""
    try:
        storage.check()
    except VoicemailError as exc:
        raise TransferError(f"cannot use the target storage: {exc.message}") from None
    except OSError as exc:
        raise TransferError(f"cannot use the target storage: {exc}") from None


@contextmanager
def _database_errors(what: str) -> Iterator[None]:
    """Turn an unreachable or refusing database into one clear line (no password in it)."""
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise TransferError(f"cannot use the {what} database: {reason}") from None


def transfer(
    *,
    source_database_url: str,
    source_storage: Storage,
    target_database_url: str,
    target_storage: Storage | None,
    box: SecretBox,
    resume: bool = False,
    batch_size: int = 1000,
    parallel: int = 4,
    progress: Progress | None = None,
) -> TransferReport:
    """Copy everything from the source to the target; see the module docstring.

    ``target_storage`` None leaves the recordings where they are (the new deployment reads
    the same folder or bucket); they are still checked. Raises TransferError on a refusal;
    a copy that finished but did not verify has ``problems`` in its report.
    """
    say = progress or (lambda _message: None)
    started = time.monotonic()
    if _same_database(source_database_url, target_database_url):
        raise TransferError("the target database is the source database")
    report = TransferReport(
        display_url(source_database_url),
        display_url(target_database_url),
        objects_moved=target_storage is not None,
    )
    tables = Base.metadata.sorted_tables  # parents before children
    source_engine = _snapshot_engine(source_database_url)
    target_engine = make_engine(target_database_url)
    try:
        with _database_errors("source"), source_engine.connect() as source:
            _check_at_head(source, "source")
            # The first reads fix the snapshot; recordings are listed after it (see above).
            counts = _counts(source, tables)
            report.tables = [TableReport(t.name, counts[t.name]) for t in tables]
            check_signing_key(source, box)
            if target_storage is not None:
                _check_storage(target_storage)

            say(f"migrating the target database {report.target_database}")
            with _database_errors("target"):
                upgrade(target_database_url)
                with target_engine.connect() as target:
                    target_counts = _counts(target, tables)
                    had_rows = {name for name, count in target_counts.items() if count}
                    if had_rows and not resume:
                        raise TransferError(
                            "the target database already holds data ("
                            + ", ".join(sorted(had_rows))
                            + "): if it is an earlier, interrupted copy of this install, "
                            "run again with --resume"
                        )
                    if had_rows:
                        _check_only_earlier_copy(source, target, tables, batch_size)

            if target_storage is not None:
                source_sizes = _copy_objects(
                    source_storage, target_storage, report.objects, parallel=parallel, progress=say
                )
            else:
                source_sizes = _listing(source_storage)
                report.objects.source_objects = len(source_sizes)

            with _database_errors("target"):
                for table, table_report in zip(tables, report.tables, strict=True):
                    _copy_table(
                        source,
                        target_engine,
                        table,
                        table_report,
                        target_had_rows=table.name in had_rows,
                        batch_size=batch_size,
                    )
                    say(
                        f"{table.name}: {table_report.inserted} inserted, "
                        f"{table_report.updated} updated of {table_report.source_rows}"
                    )
                with target_engine.begin() as target:
                    report.sequences = _reset_sequences(target, tables)
                _verify(
                    source,
                    target_engine,
                    tables,
                    report,
                    recordings=target_storage or source_storage,
                    source_sizes=source_sizes,
                    batch_size=batch_size,
                )
    finally:
        source_engine.dispose()
        target_engine.dispose()
    report.seconds = time.monotonic() - started
    return report


def target_settings(
    source: Settings,
    *,
    database_url: str,
    storage_url: str | None,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
) -> Settings:
    """The source's settings pointed at the target (validated like any settings)."""
    changes: dict[str, Any] = {"database_url": database_url}
    if storage_url is not None:
        changes["storage_url"] = storage_url
    if s3_endpoint_url is not None:
        changes["s3_endpoint_url"] = s3_endpoint_url
    if s3_region is not None:
        changes["s3_region"] = s3_region
    return Settings(_env_file=None, **{**source.model_dump(exclude_unset=True), **changes})


def storage_location(settings: Settings) -> str:
    """Where the settings' recordings live, comparable between two settings."""
    if settings.is_s3:
        return f"{settings.storage_url} at {settings.s3_endpoint_url or 'AWS'}"
    return str(settings.recordings_dir.resolve())
