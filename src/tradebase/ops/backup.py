"""Backups of both databases, their rotation, and restore.

A backup is a folder ``tradebase-YYYYMMDDTHHMMSSZ`` holding one file per database and a
``manifest.json`` that describes it: when it was taken, by which Tradebase, and for each
database its engine, schema revision and row count per table, and the size and SHA-256 of
every file. The folder is built as ``.tradebase-….partial`` and renamed when complete, so
a folder with a manifest is always a whole backup. A folder rather than a tar: each file
can be checked and restored on its own, and rotation deletes folders.

Each database is a consistent snapshot taken while the server keeps writing:

* SQLite: the online backup API (``sqlite3.Connection.backup``) copies the pages from
  inside one read transaction, so every step sees the same snapshot and writers (WAL) are
  never blocked; the copy is compressed with zstd when the ``zstd`` program is installed,
  else gzip. Row counts and the revision are read from the copy itself.
* PostgreSQL: ``pg_dump --format=custom`` (compressed by pg_dump) of a snapshot exported by
  a REPEATABLE READ transaction (``pg_export_snapshot()``); the row counts and the
  revision are read in that transaction, so they describe exactly what was dumped.
* MariaDB/MySQL: ``mariadb-dump --single-transaction`` (InnoDB's consistent read),
  compressed; the rows of each table are counted in the dump as it streams past.

Without the dump program (or with ``TRADEBASE_BACKUP_FORMAT=portable``) a PostgreSQL or
MariaDB database is backed up in the *portable* format instead: the JSON-lines export of
``db export`` (``ops/transfer.py``), read in one REPEATABLE READ transaction, packed into
one compressed tar; it restores through ``db import``, into any engine.

Main and credentials are two databases with no transaction spanning both, so each is
consistent on its own. When both settings name the same database (one SQLite file, one
PostgreSQL database), it is dumped once and the manifest says which tables belong to which.

Restore checks every file against the manifest before it touches anything, refuses a
backup whose schema revision this version of Tradebase does not know (a newer one), and
writes only into an empty target unless forced; afterwards it counts the rows again.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError

from tradebase import __version__
from tradebase.config import Settings, get_settings
from tradebase.core import migrate
from tradebase.core.db import Database, create_db_engine, database_url
from tradebase.core.money import register_sqlite_functions
from tradebase.core.time import utc_now

FORMAT = "tradebase-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
NAME_PREFIX = "tradebase-"
PARTIAL_SUFFIX = ".partial"
SQLITE_STEP_PAGES = 4096  # 16 MiB a step at 4 KiB pages: a progress tick, no slower copy
CHUNK = 1 << 20
ZSTD_LEVEL = "-3"  # zstd's default: about gzip -6's ratio at several times its speed
GZIP_LEVEL = 6

Progress = Callable[[str, int, int | None], None]
"""``progress(label, done, total)``: work done so far on one step (total None: unknown)."""


def _quiet(_label: str, _done: int, _total: int | None) -> None:
    return None


# --- errors ------------------------------------------------------------------------------


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message says why and what to do."""

    exit_code = 1


class ToolMissing(BackupError):
    """A program the engine needs (pg_dump, mariadb-dump, …) is not installed."""

    exit_code = 2


class BackupCorrupt(BackupError):
    """A file of the backup is missing, damaged or disagrees with the manifest."""

    def __init__(self, message: str, file: str) -> None:
        super().__init__(message)
        self.file = file


class BackupRefused(BackupError):
    """The backup is sound but cannot be restored here (newer schema, target not empty…)."""


_INSTALL = {
    "postgresql": (
        "the PostgreSQL client programs: apt install postgresql-client (Debian, Ubuntu),"
        " dnf install postgresql (Fedora, RHEL) or brew install libpq (macOS), at least"
        " as new as the server"
    ),
    "mysql": (
        "the MariaDB client programs: apt install mariadb-client (Debian, Ubuntu),"
        " dnf install mariadb (Fedora, RHEL) or brew install mariadb (macOS)"
    ),
    "zstd": "zstd: apt install zstd, dnf install zstd or brew install zstd",
}


def find_tool(names: Sequence[str], package: str, purpose: str) -> str:
    """The path of the first of *names* on PATH, or `ToolMissing` with the fix."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing(
        f"{' or '.join(names)} is not installed, and {purpose} needs it: install"
        f" {_INSTALL[package]}, then run the command again"
    )


# --- the manifest ------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str
    format: str  # sqlite, pg_dump-custom, sql, portable
    compression: str  # zstd, gzip, pg_dump

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "sha256": self.sha256,
            "format": self.format,
            "compression": self.compression,
        }


@dataclass(frozen=True)
class DatabaseEntry:
    database: Database
    engine: str  # sqlite, postgresql, mysql
    file: str
    revision: str | None
    tables: dict[str, int]  # rows per table, names sorted
    source: str  # where it came from (no password)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "file": self.file,
            "revision": self.revision,
            "source": self.source,
            "rows": self.rows,
            "tables": self.tables,
        }


@dataclass(frozen=True)
class Manifest:
    created_at: datetime
    completed_at: datetime
    tradebase_version: str
    databases: dict[Database, DatabaseEntry]
    files: dict[str, FileEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": _iso(self.created_at),
            "completed_at": _iso(self.completed_at),
            "tradebase_version": self.tradebase_version,
            "databases": {db.value: entry.to_json() for db, entry in self.databases.items()},
            "files": {name: entry.to_json() for name, entry in self.files.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Parse a manifest; `ValueError` says what is wrong with it."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format version {data.get('format_version')!r}; this Tradebase reads"
                f" {FORMAT_VERSION} (a newer Tradebase wrote it)"
            )
        try:
            files = {
                str(name): FileEntry(
                    str(name),
                    int(f["size"]),
                    str(f["sha256"]),
                    str(f["format"]),
                    str(f["compression"]),
                )
                for name, f in data["files"].items()
            }
            databases = {}
            for name, d in data["databases"].items():
                db = Database(name)
                databases[db] = DatabaseEntry(
                    db,
                    str(d["engine"]),
                    str(d["file"]),
                    None if d["revision"] is None else str(d["revision"]),
                    {str(t): int(n) for t, n in d["tables"].items()},
                    str(d.get("source", "")),
                )
            manifest = cls(
                _parse_time(data["created_at"]),
                _parse_time(data.get("completed_at", data["created_at"])),
                str(data["tradebase_version"]),
                databases,
                files,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed: {exc!r}") from None
        for entry in databases.values():
            if entry.file not in files:
                raise ValueError(f"database {entry.database.value} names a missing file")
        return manifest


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(raw: Any) -> datetime:
    moment = datetime.fromisoformat(str(raw))
    if moment.tzinfo is None:
        raise ValueError(f"created_at {raw!r} has no time zone")
    return moment.astimezone(UTC)


def read_manifest(folder: Path) -> Manifest:
    """The manifest of the backup in *folder*, or `BackupCorrupt` naming manifest.json."""
    path = folder / MANIFEST
    if not path.is_file():
        raise BackupCorrupt(f"{folder} has no {MANIFEST}: it is not a Tradebase backup", MANIFEST)
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupCorrupt(f"{path}: {exc}", MANIFEST) from None


# --- where each database lives -----------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    url: URL

    @property
    def engine(self) -> str:
        backend = self.url.get_backend_name()
        return "mysql" if backend == "mariadb" else backend

    @property
    def sqlite_path(self) -> Path:
        return Path(str(self.url.database)).expanduser().resolve()

    @property
    def key(self) -> tuple[str, ...]:
        if self.engine == "sqlite":
            return ("sqlite", str(self.sqlite_path))
        return (self.engine, self.url.host or "", str(self.url.port or ""), self.url.database or "")

    def describe(self) -> str:
        if self.engine == "sqlite":
            return f"SQLite file {self.sqlite_path}"
        return self.url.render_as_string(hide_password=True)


@contextlib.contextmanager
def _server(target: _Target, settings: Settings, **options: Any) -> Iterator[Connection]:
    """A connection to a PostgreSQL/MariaDB database; cannot connect: `BackupError`."""
    engine = create_db_engine(target.url, settings, pooled=False, **options)
    try:
        try:
            connection = engine.connect()
        except OperationalError as exc:
            raise BackupError(f"cannot connect to {target.describe()}: {exc.orig}") from None
        with connection:
            yield connection
    finally:
        engine.dispose()


def _group(targets: dict[Database, _Target]) -> list[tuple[_Target, list[Database]]]:
    """Databases grouped by where they live: one group per file or server database."""
    groups: dict[tuple[str, ...], tuple[_Target, list[Database]]] = {}
    for db, target in targets.items():
        groups.setdefault(target.key, (target, []))[1].append(db)
    return list(groups.values())


def _owner(table: str, databases: Sequence[Database]) -> Database:
    """Which of the databases sharing one file a table belongs to (main: all the rest)."""
    from tradebase.schema import metadata_for

    for db in databases:
        if db is Database.credentials and (
            table in metadata_for(db).tables or table == migrate.VERSION_TABLES[db]
        ):
            return db
    return Database.main if Database.main in databases else databases[0]


def _split(databases: Sequence[Database], tables: dict[str, int]) -> dict[Database, dict[str, int]]:
    split: dict[Database, dict[str, int]] = {db: {} for db in databases}
    for name in sorted(tables):
        split[_owner(name, databases)][name] = tables[name]
    return split


def _label(databases: Sequence[Database]) -> str:
    return " and ".join(db.value for db in databases)


# --- compression and hashing -------------------------------------------------------------


def compression_method() -> str:
    """zstd when the ``zstd`` program is installed, else gzip (Python's own)."""
    return "zstd" if shutil.which("zstd") else "gzip"


_EXTENSIONS = {"zstd": ".zst", "gzip": ".gz"}


@contextlib.contextmanager
def _compressed_writer(path: Path, method: str) -> Iterator[IO[bytes]]:
    if method == "gzip":
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as out,
        ):
            yield cast(IO[bytes], out)
        return
    zstd = find_tool(["zstd"], "zstd", "zstd compression")
    with open(path, "wb") as raw:
        process = subprocess.Popen(  # noqa: S603 - a fixed program and arguments
            [zstd, "-q", ZSTD_LEVEL, "-T0", "-c", "-"], stdin=subprocess.PIPE, stdout=raw
        )
        assert process.stdin is not None
        try:
            yield process.stdin
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.stdin.close()
        if process.wait() != 0:
            raise BackupError(f"zstd failed writing {path} (exit {process.returncode})")


@contextlib.contextmanager
def _decompressed_reader(path: Path, method: str) -> Iterator[IO[bytes]]:
    if method == "gzip":
        with gzip.open(path, "rb") as gz:
            yield cast(IO[bytes], gz)
        return
    if method != "zstd":
        raise BackupCorrupt(f"{path.name}: unknown compression {method!r}", path.name)
    zstd = find_tool(["zstd"], "zstd", f"reading {path.name} (zstd-compressed)")
    process = subprocess.Popen(  # noqa: S603 - a fixed program and arguments
        [zstd, "-q", "-d", "-c", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        yield process.stdout
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.stdout.close()
    error = process.stderr.read().decode(errors="replace").strip()
    if process.wait() != 0:
        raise BackupCorrupt(f"{path.name}: zstd cannot decompress it: {error}", path.name)


def _compress_file(source: Path, target: Path, method: str, label: str, progress: Progress) -> None:
    total = source.stat().st_size
    done = 0
    with open(source, "rb") as src, _compressed_writer(target, method) as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            done += len(chunk)
            progress(label, done, total)


def _decompress_file(
    source: Path, target: Path, method: str, label: str, progress: Progress
) -> None:
    total = source.stat().st_size
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(source, "rb"))
        if method == "gzip":
            src = cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")))
        else:
            raw.close()
            src = stack.enter_context(_decompressed_reader(source, method))
        out = stack.enter_context(open(target, "wb"))
        done = 0
        while chunk := src.read(CHUNK):
            out.write(chunk)
            done += len(chunk)
            if method == "gzip":
                progress(label, raw.tell(), total)
            else:
                progress(label, done, None)


def sha256_file(path: Path, label: str = "", progress: Progress = _quiet) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(label, done, total)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- taking a backup ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Dumped:
    file: FileEntry
    revisions: dict[Database, str | None]
    tables: dict[Database, dict[str, int]]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest

    @property
    def size(self) -> int:
        return sum(f.size for f in self.manifest.files.values())


def create_backup(
    output_dir: Path,
    *,
    databases: Iterable[Database] = tuple(Database),
    settings: Settings | None = None,
    progress: Progress = _quiet,
) -> BackupResult:
    """Take a consistent online snapshot of *databases* into a new folder in *output_dir*.

    Checks first that the programs each engine needs are installed (`ToolMissing`). The
    folder appears under its final name only once every file and the manifest are written
    and synced to disk; a failure leaves nothing behind.
    """
    settings = settings or get_settings()
    targets = {db: _Target(database_url(db, settings)) for db in databases}
    groups = _group(targets)
    method = compression_method()
    portable = {target.key for target, dbs in groups if _portable(target, dbs, settings)}
    for target, dbs in groups:
        if target.key not in portable:
            _check_backup_target(target, dbs, settings)
    created_at = utc_now()
    output_dir.mkdir(parents=True, exist_ok=True)
    while True:  # another backup may pick the same second's name
        name = _unique_name(output_dir, created_at)
        partial = output_dir / f".{name}{PARTIAL_SUFFIX}"
        try:
            partial.mkdir(mode=0o700)  # password hashes and encrypted secrets: owner only
            break
        except FileExistsError:
            continue
    try:
        dumped: list[tuple[list[Database], _Target, _Dumped]] = []
        for target, dbs in groups:
            stem = "+".join(db.value for db in dbs)
            if target.engine == "sqlite":
                result = _backup_sqlite(target, dbs, partial, stem, method, settings, progress)
            elif target.key in portable:
                result = _backup_portable(dbs, partial, stem, method, settings, progress)
            elif target.engine == "postgresql":
                result = _backup_postgresql(target, dbs, partial, stem, settings, progress)
            else:
                result = _backup_mysql(target, dbs, partial, stem, method, settings, progress)
            dumped.append((dbs, target, result))
        manifest = Manifest(
            created_at=created_at,
            completed_at=utc_now(),
            tradebase_version=__version__,
            databases={
                db: DatabaseEntry(
                    db,
                    target.engine,
                    result.file.name,
                    result.revisions[db],
                    result.tables[db],
                    target.describe(),
                )
                for dbs, target, result in dumped
                for db in dbs
            },
            files={result.file.name: result.file for _, _, result in dumped},
        )
        manifest_path = partial / MANIFEST
        manifest_path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
        for path in partial.iterdir():
            path.chmod(0o600)
            _fsync(path)
        _fsync(partial)
        final = output_dir / name
        partial.rename(final)
        _fsync(output_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BackupResult(final, manifest)


def _unique_name(folder: Path, moment: datetime) -> str:
    base = f"{NAME_PREFIX}{moment:%Y%m%dT%H%M%SZ}"
    name, n = base, 1
    while (folder / name).exists() or (folder / f".{name}{PARTIAL_SUFFIX}").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _portable(target: _Target, dbs: Sequence[Database], settings: Settings) -> bool:
    """Whether *target* is dumped in the portable format (TRADEBASE_BACKUP_FORMAT)."""
    if target.engine == "sqlite" or settings.backup_format == "native":
        return False
    if settings.backup_format == "portable":
        return True
    try:
        _check_backup_target(target, dbs, settings)
    except ToolMissing:
        return True
    return False


def _check_backup_target(target: _Target, dbs: Sequence[Database], settings: Settings) -> None:
    what = f"backing up the {_label(dbs)} database ({target.engine})"
    if settings.backup_format == "native":
        what += " with TRADEBASE_BACKUP_FORMAT=native (portable needs no programs)"
    if target.engine == "sqlite":
        if target.url.database in (None, "", ":memory:") or "mode=memory" in str(target.url):
            raise BackupRefused(f"the {_label(dbs)} database is in memory: nothing to back up")
        if not target.sqlite_path.is_file():
            raise BackupRefused(
                f"the {_label(dbs)} database {target.describe()} does not exist:"
                " create it with tradebase db upgrade"
            )
    elif target.engine == "postgresql":
        find_tool(["pg_dump"], "postgresql", what)
    else:
        find_tool(["mariadb-dump", "mysqldump"], "mysql", what)


def _sqlite_connect(path: Path, settings: Settings) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, isolation_level=None, timeout=settings.sqlite_busy_timeout_ms / 1000
    )
    register_sqlite_functions(connection)  # an index on decimal text names its collation
    return connection


def _sqlite_contents(
    path: Path, dbs: Sequence[Database], settings: Settings
) -> tuple[dict[Database, str | None], dict[Database, dict[str, int]]]:
    connection = _sqlite_connect(path, settings)
    try:
        names = [
            str(row[0])
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            )
        ]
        counts = {
            name: int(connection.execute(_count_sql(_quote(name))).fetchone()[0]) for name in names
        }
        revisions = {
            db: _first(connection, migrate.VERSION_TABLES[db])
            if migrate.VERSION_TABLES[db] in counts
            else None
            for db in dbs
        }
    finally:
        connection.close()
    return revisions, _split(dbs, counts)


def _first(connection: sqlite3.Connection, version_table: str) -> str | None:
    row = connection.execute(_version_sql(_quote(version_table))).fetchone()
    return None if row is None else str(row[0])


def _count_sql(quoted_table: str) -> str:
    return f"SELECT count(*) FROM {quoted_table}"  # noqa: S608 - a quoted identifier


def _version_sql(quoted_table: str) -> str:
    return f"SELECT version_num FROM {quoted_table}"  # noqa: S608 - a quoted identifier


def _quote(name: str, mark: str = '"') -> str:
    return mark + name.replace(mark, mark * 2) + mark


def _backup_sqlite(
    target: _Target,
    dbs: Sequence[Database],
    folder: Path,
    stem: str,
    method: str,
    settings: Settings,
    progress: Progress,
) -> _Dumped:
    copy = folder / f"{stem}.sqlite"
    label = f"{_label(dbs)}: snapshot"
    source = _sqlite_connect(target.sqlite_path, settings)
    try:
        # Every backup step reuses this read transaction, so the copy is this one snapshot
        # however long it takes; without it, each step would restart on a concurrent write
        # (https://www.sqlite.org/backup.html) and a busy server would keep it from ending.
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        destination = sqlite3.connect(copy)
        try:
            source.backup(
                destination,
                pages=SQLITE_STEP_PAGES,
                progress=lambda _status, remaining, total: progress(
                    label, total - remaining, total
                ),
            )
        finally:
            destination.close()
        source.execute("ROLLBACK")
    finally:
        source.close()
    revisions, tables = _sqlite_contents(copy, dbs, settings)
    packed = folder / f"{stem}.sqlite{_EXTENSIONS[method]}"
    _compress_file(copy, packed, method, f"{_label(dbs)}: compress ({method})", progress)
    copy.unlink()
    return _Dumped(_file_entry(packed, "sqlite", method, progress), revisions, tables)


class _TransferProgress:
    """transfer's progress (database, table, rows) as this module's (label, done, total)."""

    def __init__(self, progress: Progress, verb: str) -> None:
        self.progress, self.verb = progress, verb
        self.label, self.done, self.total = "", 0, 0

    def database(self, database: Database, rows: int) -> None:
        self.label, self.done, self.total = f"{database.value}: {self.verb}", 0, rows
        self.progress(self.label, 0, rows)

    def table(self, database: Database, name: str, rows: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        self.done += rows
        self.progress(self.label, self.done, self.total)


def _backup_portable(
    dbs: Sequence[Database],
    partial: Path,
    stem: str,
    method: str,
    settings: Settings,
    progress: Progress,
) -> _Dumped:
    """The portable format: ``db export`` of *dbs* (one consistent read transaction per
    database), packed into one compressed tar."""
    from tradebase.ops import transfer

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=partial))
    try:
        try:
            exported = transfer.export(
                staging / "export",
                dbs,
                settings=settings,
                progress=_TransferProgress(progress, "exporting (portable format)"),
            )
        except transfer.TransferError as exc:
            raise BackupRefused(
                f"the portable backup format cannot be used: {exc.message}; or install the"
                " engine's dump program (TRADEBASE_BACKUP_FORMAT=native)"
            ) from None
        path = partial / f"{stem}.portable.tar{_EXTENSIONS[method]}"
        with _compressed_writer(path, method) as out, tarfile.open(fileobj=out, mode="w|") as tar:
            tar.add(staging / "export", arcname=".")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entries = exported.databases
    return _Dumped(
        _file_entry(path, "portable", method, progress),
        {db: entries[db].revision for db in dbs},
        {db: {t.name: t.rows for t in entries[db].tables} for db in dbs},
    )


def _restore_portable(
    folder: Path,
    file: FileEntry,
    dbs: Sequence[Database],
    settings: Settings,
    progress: Progress,
) -> None:
    """Unpack a portable backup and load it with ``db import`` (one transaction per
    database; a target holding data was refused or --forced before)."""
    from tradebase.ops import transfer

    with tempfile.TemporaryDirectory(prefix="tradebase-restore-") as tmp:
        with (
            _decompressed_reader(folder / file.name, file.compression) as raw,
            tarfile.open(fileobj=raw, mode="r|") as tar,
        ):
            tar.extractall(tmp, filter="data")
        try:
            transfer.import_export(
                Path(tmp),
                list(dbs),
                force=True,
                settings=settings,
                progress=_TransferProgress(progress, "restoring (portable format)"),
            )
        except transfer.TransferError as exc:
            raise BackupRefused(f"{file.name}: {exc.message}") from None


def _file_entry(path: Path, fmt: str, compression: str, progress: Progress) -> FileEntry:
    sha = sha256_file(path, f"{path.name}: SHA-256", progress)
    return FileEntry(path.name, path.stat().st_size, sha, fmt, compression)


# PostgreSQL -----------------------------------------------------------------------------


def _pg_conninfo(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI for the command-line tools, and the password for their environment."""
    env = {**os.environ}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    bare = url.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


def _server_tables(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


def _count_rows(connection: Connection, tables: Iterable[str]) -> dict[str, int]:
    quote = connection.dialect.identifier_preparer.quote
    return {
        name: int(connection.exec_driver_sql(_count_sql(quote(name))).scalar_one())
        for name in tables
    }


def _server_revision(connection: Connection, db: Database, tables: Iterable[str]) -> str | None:
    version_table = migrate.VERSION_TABLES[db]
    if version_table not in set(tables):
        return None
    quote = connection.dialect.identifier_preparer.quote
    value = connection.exec_driver_sql(_version_sql(quote(version_table))).scalar()
    return None if value is None else str(value)


_PG_DUMPING = re.compile(r'dumping contents of table "(?:[^"]+\.)?([^"]+)"')
_PG_RESTORING = re.compile(r'processing data for table "(?:[^"]+\.)?([^"]+)"')


def _run_with_progress(
    args: list[str],
    env: dict[str, str],
    pattern: re.Pattern[str],
    label: str,
    total: int,
    progress: Progress,
) -> None:
    """Run a pg_dump/pg_restore with --verbose, advancing on each table it names."""
    process = subprocess.Popen(  # noqa: S603 - the tool's path and our own arguments
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True
    )
    assert process.stderr is not None
    done = 0
    messages: list[str] = []
    progress(label, 0, total)
    try:
        for line in process.stderr:
            if pattern.search(line):
                done += 1
                progress(label, min(done, total), total)
            elif "error" in line.lower() or "warning" in line.lower() or "fatal" in line.lower():
                messages.append(line.rstrip())
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.wait() != 0:
        detail = "\n  ".join(messages[-10:]) or f"exit {process.returncode}"
        hint = ""
        if "version mismatch" in detail:
            hint = f"\n  fix: install {_INSTALL['postgresql']}"
        raise BackupError(f"{Path(args[0]).name} failed:\n  {detail}{hint}")


def _backup_postgresql(
    target: _Target,
    dbs: Sequence[Database],
    folder: Path,
    stem: str,
    settings: Settings,
    progress: Progress,
) -> _Dumped:
    pg_dump = find_tool(["pg_dump"], "postgresql", "backing up PostgreSQL")
    dump = folder / f"{stem}.pgdump"
    conninfo, env = _pg_conninfo(target.url)
    with _server(target, settings, isolation_level="REPEATABLE READ") as connection:
        # pg_dump reads the snapshot this transaction exported, and the counts below
        # are read in it too: the manifest describes exactly the rows in the dump.
        snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        tables = _server_tables(connection)
        counts = _count_rows(connection, tables)
        revisions = {db: _server_revision(connection, db, tables) for db in dbs}
        _run_with_progress(
            [
                pg_dump,
                "--format=custom",
                f"--snapshot={snapshot}",
                "--verbose",
                f"--file={dump}",
                f"--dbname={conninfo}",
            ],
            env,
            _PG_DUMPING,
            f"{_label(dbs)}: pg_dump",
            len(tables),
            progress,
        )
        connection.rollback()
    return _Dumped(
        _file_entry(dump, "pg_dump-custom", "pg_dump", progress), revisions, _split(dbs, counts)
    )


# MariaDB / MySQL ------------------------------------------------------------------------


@contextlib.contextmanager
def _mysql_client_args(program: str, url: URL) -> Iterator[list[str]]:
    """The connection options of a MariaDB client program; a password goes in a 0600 file."""
    with tempfile.TemporaryDirectory(prefix="tradebase-") as scratch:
        args = [program]
        if url.password is not None:
            option_file = Path(scratch) / "client.cnf"
            secret = str(url.password).replace("\\", "\\\\").replace('"', '\\"')
            option_file.touch(mode=0o600)
            option_file.write_text(f'[client]\npassword="{secret}"\n', encoding="utf-8")
            args.append(f"--defaults-extra-file={option_file}")  # must come first
        socket = url.query.get("unix_socket")
        if socket:
            args.append(f"--socket={socket}")
        else:
            args.append("--protocol=TCP")  # as PyMySQL: "localhost" is a TCP host too
            args.append(f"--host={url.host or 'localhost'}")
            if url.port:
                args.append(f"--port={url.port}")
        if url.username:
            args.append(f"--user={url.username}")
        args.append("--default-character-set=utf8mb4")
        yield args


_MYSQL_INSERT = re.compile(rb"INSERT INTO `((?:[^`]|``)+)` VALUES")
_MYSQL_CREATE = re.compile(rb"CREATE TABLE `((?:[^`]|``)+)`")
_MYSQL_STRING = re.compile(rb"'(?:[^'\\]|\\.)*'")
_MYSQL_FIRST_STRING = re.compile(rb"\('((?:[^'\\]|\\.)*)'")


class _DumpCounter:
    """Counts the rows of each table in a mariadb-dump/mysqldump stream, line by line.

    A dump writes every string with its newlines escaped, so a line never ends inside a
    string. Rows are the tuples of ``INSERT INTO `t` VALUES (…),(…);``, one line
    (mysqldump) or one line per row (mariadb-dump 10.11); with strings blanked out
    (``--hex-blob`` writes binary as 0x…) each row is the one ``(`` left.
    """

    def __init__(self, version_tables: Iterable[str]) -> None:
        self.rows: dict[str, int] = {}
        self.versions: dict[str, str] = {}
        self._version_tables = set(version_tables)
        self._table: str | None = None  # inside this table's INSERT statement

    def feed(self, line: bytes) -> str | None:
        """Account for one line; return a table's name when its definition starts."""
        if self._table is None:
            if line.startswith(b"CREATE TABLE `"):
                created = _MYSQL_CREATE.match(line)
                if created:
                    name = _mysql_name(created.group(1))
                    self.rows.setdefault(name, 0)
                    return name
                return None
            insert = _MYSQL_INSERT.match(line) if line.startswith(b"INSERT INTO `") else None
            if insert is None:
                return None
            self._table = _mysql_name(insert.group(1))
            line = line[insert.end() :]
        table = self._table
        if table in self._version_tables and table not in self.versions:
            first = _MYSQL_FIRST_STRING.search(line)
            if first:
                self.versions[table] = first.group(1).decode()
        values = _MYSQL_STRING.sub(b"''", line)
        self.rows[table] = self.rows.get(table, 0) + values.count(b"(")
        if values.rstrip().endswith(b";"):
            self._table = None
        return None


def _mysql_name(raw: bytes) -> str:
    return raw.decode("utf-8").replace("``", "`")


def _backup_mysql(
    target: _Target,
    dbs: Sequence[Database],
    folder: Path,
    stem: str,
    method: str,
    settings: Settings,
    progress: Progress,
) -> _Dumped:
    dumper = find_tool(["mariadb-dump", "mysqldump"], "mysql", "backing up MariaDB/MySQL")
    with _server(target, settings) as connection:
        total = len(_server_tables(connection))
    packed = folder / f"{stem}.sql{_EXTENSIONS[method]}"
    label = f"{_label(dbs)}: {Path(dumper).name}"
    counter = _DumpCounter(migrate.VERSION_TABLES[db] for db in dbs)
    with (
        _mysql_client_args(dumper, target.url) as args,
        tempfile.TemporaryFile() as errors,
        _compressed_writer(packed, method) as out,
    ):
        args += [
            "--single-transaction",  # one consistent InnoDB read, no table locks
            "--quick",
            "--hex-blob",
            "--triggers",
            "--no-tablespaces",
            str(target.url.database),
        ]
        process = subprocess.Popen(  # noqa: S603 - the tool's path and our own arguments
            args, stdout=subprocess.PIPE, stderr=errors
        )
        assert process.stdout is not None
        progress(label, 0, total)
        try:
            for line in process.stdout:
                if counter.feed(line) is not None:
                    progress(label, min(len(counter.rows), total), total)
                out.write(line)
        except BaseException:
            process.kill()
            process.wait()
            raise
        if process.wait() != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip()
            raise BackupError(f"{Path(dumper).name} failed (exit {process.returncode}): {detail}")
    revisions = {db: counter.versions.get(migrate.VERSION_TABLES[db]) for db in dbs}
    tables = _split(dbs, counter.rows)
    return _Dumped(_file_entry(packed, "sql", method, progress), revisions, tables)


# --- verifying and restoring -------------------------------------------------------------


def backup_folder(path: Path) -> Path:
    """The backup folder *path* names: the folder itself or its manifest.json."""
    if path.is_dir():
        return path
    if path.name == MANIFEST and path.is_file():
        return path.parent
    raise BackupCorrupt(
        f"{path} is not a backup: give a backup's folder (or its {MANIFEST})", MANIFEST
    )


def verify_backup(path: Path, *, progress: Progress = _quiet) -> tuple[Path, Manifest]:
    """Check every file of the backup against the manifest: present, same size, same SHA-256.

    Raises `BackupCorrupt` naming the first file that differs.
    """
    folder = backup_folder(path)
    manifest = read_manifest(folder)
    for name, entry in manifest.files.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise BackupCorrupt(f"{MANIFEST} names a file outside the backup: {name!r}", MANIFEST)
        file = folder / name
        if not file.is_file():
            raise BackupCorrupt(f"{name} is missing from the backup {folder}", name)
        size = file.stat().st_size
        if size != entry.size:
            raise BackupCorrupt(
                f"{name} is {size:,} bytes, the manifest says {entry.size:,}: the file is"
                " damaged or incomplete; do not restore this backup",
                name,
            )
        sha = sha256_file(file, f"verify {name}", progress)
        if sha != entry.sha256:
            raise BackupCorrupt(
                f"{name} does not match the manifest (SHA-256 {sha}, expected"
                f" {entry.sha256}): the file is damaged; do not restore this backup",
                name,
            )
    return folder, manifest


def known_revisions(database: Database) -> set[str]:
    """Every revision of *database*'s migrations that this version of Tradebase ships."""
    return {rev for rev, _down, _created, _message in migrate.history(database)}


@dataclass(frozen=True)
class RestoredDatabase:
    database: Database
    target: str
    revision: str | None
    head: str
    rows: int
    tables: int


def restore_backup(
    path: Path,
    *,
    databases: Iterable[Database] | None = None,
    force: bool = False,
    settings: Settings | None = None,
    progress: Progress = _quiet,
) -> list[RestoredDatabase]:
    """Restore a backup into the configured databases (all the backup holds, by default).

    In order, before anything is written: the files match the manifest (`BackupCorrupt`);
    every schema revision is one this Tradebase knows, i.e. not newer (`BackupRefused`);
    each target is the backup's engine and, unless *force*, empty (`BackupRefused`).
    Afterwards every table's row count is checked against the manifest.
    """
    settings = settings or get_settings()
    folder, manifest = verify_backup(path, progress=progress)
    wanted = list(databases) if databases is not None else list(manifest.databases)
    for db in wanted:
        if db not in manifest.databases:
            raise BackupRefused(f"the backup {folder} holds no {db.value} database")
    _check_revisions(manifest, wanted)
    plan = _restore_plan(manifest, wanted, settings)
    for file, dbs, target in plan:
        _check_restore_tools(target, file)
        if not force:
            _check_empty(target, dbs, settings)
    # SQLite files are all unpacked and checked first, then swapped in together, so a
    # damaged or busy one leaves both databases as they were.
    staged: list[tuple[Path, _Target, list[Database]]] = []
    try:
        for file, dbs, target in plan:
            if file.format == "sqlite":
                expected = {t: n for db in dbs for t, n in manifest.databases[db].tables.items()}
                path = _stage_sqlite(folder, file, dbs, target, expected, settings, progress)
                staged.append((path, target, dbs))
        for _path, target, dbs in staged:
            if target.sqlite_path.exists():
                _take_over_sqlite(target.sqlite_path, dbs)
        for path, target, _dbs in staged:
            _swap_sqlite(path, target)
    finally:
        for path, _target, _dbs in staged:
            _discard(path)
    restored: list[RestoredDatabase] = []
    for file, dbs, target in plan:
        entries = [manifest.databases[db] for db in dbs]
        if file.format == "portable":
            _restore_portable(folder, file, dbs, settings, progress)
            _check_restored(target, entries, settings)
        elif target.engine == "postgresql":
            _restore_postgresql(
                folder, file, dbs, target, sum(len(e.tables) for e in entries), progress
            )
            _check_restored(target, entries, settings)
        elif target.engine == "mysql":
            _restore_mysql(folder, file, dbs, target, progress)
            _check_restored(target, entries, settings)
        for entry in entries:
            restored.append(
                RestoredDatabase(
                    entry.database,
                    target.describe(),
                    entry.revision,
                    migrate.head_revision(entry.database),
                    entry.rows,
                    len(entry.tables),
                )
            )
    return restored


def _check_revisions(manifest: Manifest, wanted: Sequence[Database]) -> None:
    for db in wanted:
        revision = manifest.databases[db].revision
        if revision is not None and revision not in known_revisions(db):
            raise BackupRefused(
                f"the backup's {db.value} database is at revision {revision}, which this"
                f" Tradebase ({__version__}, latest {db.value} revision"
                f" {migrate.head_revision(db)}) does not know: it comes from a newer version"
                f" (the backup was made by Tradebase {manifest.tradebase_version}). Restore it"
                " with that version or a later one."
            )


def _restore_plan(
    manifest: Manifest, wanted: Sequence[Database], settings: Settings
) -> list[tuple[FileEntry, list[Database], _Target]]:
    plan: list[tuple[FileEntry, list[Database], _Target]] = []
    seen: dict[tuple[str, ...], str] = {}
    for name, file in manifest.files.items():
        holds = [db for db, entry in manifest.databases.items() if entry.file == name]
        dbs = [db for db in holds if db in wanted]
        if not dbs:
            continue
        if dbs != holds:
            raise BackupRefused(
                f"{name} holds the {_label(holds)} databases in one; restore them together"
                " (--database all)"
            )
        targets = {db: _Target(database_url(db, settings)) for db in dbs}
        engine = manifest.databases[dbs[0]].engine
        for db, target in targets.items():
            if target.engine != engine and file.format != "portable":
                raise BackupRefused(
                    f"the backup's {db.value} database is {engine}, the configured one is"
                    f" {target.engine} ({target.describe()}): a backup restores into the same"
                    " engine; to move between engines use export and import"
                )
        keys = {target.key for target in targets.values()}
        if len(keys) > 1:
            raise BackupRefused(
                f"the backup keeps the {_label(dbs)} databases in one {engine} database, the"
                " settings name two: point TRADEBASE_DATABASE_URL and"
                " TRADEBASE_CREDENTIALS_DATABASE_URL at one database to restore it"
            )
        target = targets[dbs[0]]
        if target.key in seen:
            raise BackupRefused(
                f"the backup keeps the {seen[target.key]} and {_label(dbs)} databases apart,"
                f" the settings put both in {target.describe()}: give each its own database"
            )
        seen[target.key] = _label(dbs)
        plan.append((file, dbs, target))
    return plan


def _check_restore_tools(target: _Target, file: FileEntry) -> None:
    what = f"restoring {file.name}"
    if file.format == "portable":
        pass  # loaded by Tradebase itself
    elif target.engine == "postgresql":
        find_tool(["pg_restore"], "postgresql", what)
    elif target.engine == "mysql":
        find_tool(["mariadb", "mysql"], "mysql", what)
    if file.compression == "zstd":
        find_tool(["zstd"], "zstd", what)


def _check_empty(target: _Target, dbs: Sequence[Database], settings: Settings) -> None:
    tables = _existing_tables(target, settings)
    if tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise BackupRefused(
            f"the {_label(dbs)} database {target.describe()} is not empty ({len(tables)}"
            f" tables: {shown}); restore replaces it only with --force"
        )


def _existing_tables(target: _Target, settings: Settings) -> list[str]:
    if target.engine == "sqlite":
        path = target.sqlite_path
        if not path.exists() or path.stat().st_size == 0:
            return []
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                rows = connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                ).fetchall()
            finally:
                connection.close()
        except sqlite3.DatabaseError as exc:
            return [f"(not a readable SQLite database: {exc})"]
        return [str(row[0]) for row in rows]
    with _server(target, settings) as server:
        return _server_tables(server)


def _stage_sqlite(
    folder: Path,
    file: FileEntry,
    dbs: Sequence[Database],
    target: _Target,
    expected: dict[str, int],
    settings: Settings,
    progress: Progress,
) -> Path:
    """Unpack a SQLite file beside its target and check its row counts; return its path."""
    path = target.sqlite_path
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.restore-{os.getpid()}")
    _decompress_file(
        folder / file.name, staged, file.compression, f"{_label(dbs)}: unpack", progress
    )
    _revisions, tables = _sqlite_contents(staged, dbs, settings)
    found = {t: n for split in tables.values() for t, n in split.items()}
    _compare_counts(file.name, expected, found)
    if path.exists():
        staged.chmod(stat.S_IMODE(path.stat().st_mode))
    _fsync(staged)
    return staged


def _swap_sqlite(staged: Path, target: _Target) -> None:
    path = target.sqlite_path
    for suffix in ("-wal", "-shm", "-journal"):
        # Left beside the new file, an old WAL or journal would be replayed into it.
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    os.replace(staged, path)
    _fsync(path.parent)


def _discard(staged: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        staged.with_name(staged.name + suffix).unlink(missing_ok=True)


def _take_over_sqlite(path: Path, dbs: Sequence[Database]) -> None:
    """Fold the target's WAL into it and check that no other connection has it open.

    Leaving WAL mode needs the only connection to the file, so a running ``serve`` or
    ``worker`` makes this fail instead of having its database replaced under it.
    """
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            mode = connection.execute("PRAGMA journal_mode = DELETE").fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:
        raise BackupRefused(
            f"the {_label(dbs)} database {path} is in use ({exc}): stop every tradebase"
            " serve and worker that uses it, then restore again"
        ) from None
    except sqlite3.DatabaseError:
        return  # not a database at all: nothing to protect, --force replaces it
    if mode is None or str(mode[0]).lower() != "delete":
        raise BackupRefused(
            f"the {_label(dbs)} database {path} is in use: stop every tradebase serve and"
            " worker that uses it, then restore again"
        )


def _compare_counts(where: str, expected: dict[str, int], found: dict[str, int]) -> None:
    for table, rows in expected.items():
        if found.get(table) != rows:
            have = "missing" if table not in found else f"{found[table]:,} rows"
            raise BackupError(
                f"{where}: table {table} is {have} after the restore, the manifest says"
                f" {rows:,} rows"
            )


def _restore_postgresql(
    folder: Path,
    file: FileEntry,
    dbs: Sequence[Database],
    target: _Target,
    tables: int,
    progress: Progress,
) -> None:
    pg_restore = find_tool(["pg_restore"], "postgresql", f"restoring {file.name}")
    conninfo, env = _pg_conninfo(target.url)
    _run_with_progress(
        [
            pg_restore,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",  # all or nothing: a failed restore leaves the target as it was
            "--exit-on-error",
            "--verbose",
            f"--dbname={conninfo}",
            str(folder / file.name),
        ],
        env,
        _PG_RESTORING,
        f"{_label(dbs)}: pg_restore",
        tables,
        progress,
    )


def _restore_mysql(
    folder: Path, file: FileEntry, dbs: Sequence[Database], target: _Target, progress: Progress
) -> None:
    client = find_tool(["mariadb", "mysql"], "mysql", f"restoring {file.name}")
    label = f"{_label(dbs)}: {Path(client).name}"
    with (
        _mysql_client_args(client, target.url) as args,
        tempfile.TemporaryFile() as errors,
        _decompressed_reader(folder / file.name, file.compression) as dump,
    ):
        args += ["--batch", str(target.url.database)]
        process = subprocess.Popen(  # noqa: S603 - the tool's path and our own arguments
            args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
        )
        assert process.stdin is not None
        done = 0
        try:
            while chunk := dump.read(CHUNK):
                process.stdin.write(chunk)
                done += len(chunk)
                progress(label, done, None)
            process.stdin.close()
        except BrokenPipeError:
            pass  # the client stopped on an error: reported below
        except BaseException:
            process.kill()
            process.wait()
            raise
        if process.wait() != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip()
            raise BackupError(
                f"{Path(client).name} failed restoring {file.name} into {target.describe()}"
                f" (exit {process.returncode}): {detail}"
            )


def _check_restored(target: _Target, entries: Sequence[DatabaseEntry], settings: Settings) -> None:
    with _server(target, settings) as connection:
        present = set(_server_tables(connection))
        for entry in entries:
            found = _count_rows(connection, [t for t in entry.tables if t in present])
            _compare_counts(entry.file, entry.tables, found)
            revision = _server_revision(connection, entry.database, present)
            if revision != entry.revision:
                raise BackupError(
                    f"{entry.file}: the {entry.database.value} database is at revision"
                    f" {revision} after the restore, the manifest says {entry.revision}"
                )


# --- rotation ----------------------------------------------------------------------------


RotationPlan = tuple[dict[str, tuple[str, ...]], list[str]]


def _months_back(moment: date, count: int) -> list[tuple[int, int]]:
    months = []
    year, month = moment.year, moment.month
    for _ in range(count):
        months.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


def plan_rotation(
    backups: Sequence[tuple[str, datetime]],
    now: datetime,
    keep_daily: int = 7,
    keep_weekly: int = 4,
    keep_monthly: int = 12,
) -> RotationPlan:
    """Which backups grandfather-father-son rotation keeps, and which it deletes.

    Kept: the newest backup of each of the last *keep_daily* days (today and the days
    before it), of each of the last *keep_weekly* ISO weeks (this week and the weeks
    before) and of each of the last *keep_monthly* calendar months, all in UTC. A period
    without a backup keeps nothing and is not made up from older periods, as in seed 002
    ("retained for 7 days"). Also kept: the newest backup of all, whatever its age, so
    rotation never leaves none, and any backup dated after *now* (a clock that moved).

    Returns ``(keep, delete)``: *keep* maps each kept name to the rules that keep it
    (``daily``, ``weekly``, ``monthly``, ``newest``, ``future``), newest first; *delete*
    lists the other names, newest first.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    today = now.date()
    days = {today - timedelta(days=i) for i in range(keep_daily)}
    weeks = {(today - timedelta(weeks=i)).isocalendar()[:2] for i in range(keep_weekly)}
    months = set(_months_back(today, keep_monthly))
    ordered = sorted(
        ((name, moment.astimezone(UTC)) for name, moment in backups),
        key=lambda item: (item[1], item[0]),
        reverse=True,
    )
    reasons: dict[str, list[str]] = {name: [] for name, _ in ordered}
    taken: set[tuple[str, object]] = set()
    for name, moment in ordered:
        if moment > now:
            reasons[name].append("future")
            continue
        day = moment.date()
        for rule, period, wanted in (
            ("daily", day, day in days),
            ("weekly", day.isocalendar()[:2], day.isocalendar()[:2] in weeks),
            ("monthly", (day.year, day.month), (day.year, day.month) in months),
        ):
            if wanted and (rule, period) not in taken:
                taken.add((rule, period))
                reasons[name].append(rule)
    past = [name for name, moment in ordered if moment <= now]
    if past and not reasons[past[0]]:
        reasons[past[0]].append("newest")
    keep = {name: tuple(reasons[name]) for name, _ in ordered if reasons[name]}
    delete = [name for name, _ in ordered if not reasons[name]]
    return keep, delete


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.path.name


def list_backups(directory: Path) -> tuple[list[BackupInfo], list[Path]]:
    """The backups in *directory* (folders with a readable manifest), newest first, and the
    entries that are not backups (never touched by rotation)."""
    backups: list[BackupInfo] = []
    others: list[Path] = []
    if not directory.is_dir():
        return backups, others
    for path in sorted(directory.iterdir()):
        if path.is_symlink() or not path.is_dir() or path.name.endswith(PARTIAL_SUFFIX):
            others.append(path)
            continue
        try:
            backups.append(BackupInfo(path, read_manifest(path)))
        except BackupCorrupt:
            others.append(path)
    backups.sort(key=lambda b: (b.manifest.created_at, b.name), reverse=True)
    return backups, others


@dataclass(frozen=True)
class RotationResult:
    keep: dict[str, tuple[str, ...]]
    deleted: list[str]
    ignored: list[Path] = field(default_factory=list)


def rotate(
    directory: Path,
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> RotationResult:
    """Delete the backups in *directory* that `plan_rotation` does not keep (settings give
    the counts). Only folders with a Tradebase manifest are considered, and backups of
    different databases (``--database main`` against all) are rotated apart, so one
    never stands in for the other."""
    settings = settings or get_settings()
    now = now or utc_now()
    backups, ignored = list_backups(directory)
    kinds: dict[tuple[str, ...], list[BackupInfo]] = {}
    for info in backups:
        kinds.setdefault(tuple(sorted(db.value for db in info.manifest.databases)), []).append(info)
    keep: dict[str, tuple[str, ...]] = {}
    delete: list[str] = []
    for group in kinds.values():
        kept, deleted = plan_rotation(
            [(b.name, b.manifest.created_at) for b in group],
            now,
            settings.backup_keep_daily,
            settings.backup_keep_weekly,
            settings.backup_keep_monthly,
        )
        keep.update(kept)
        delete += deleted
    order = {b.name: n for n, b in enumerate(backups)}  # newest first
    keep = dict(sorted(keep.items(), key=lambda item: order[item[0]]))
    delete.sort(key=order.__getitem__)
    if not dry_run:
        for name in delete:
            shutil.rmtree(directory / name)
    return RotationResult(keep, delete, ignored)
