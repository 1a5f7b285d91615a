"""One Alembic history for both databases, driven from Python and the CLI.

``migrations/`` holds one environment and one line of revisions per database, in
``versions/main`` and ``versions/credentials`` (branch labels ``main`` and
``credentials``). Each database records its head in its own version table, so the two
databases may live in one server database or in two. ``head``, ``base`` and relative
revisions (``-1``, ``+2``) are taken within the database's own line; keeping the lines in
separate version folders lets autogenerate compare one database at a time.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import CheckConstraint, Column, Index, MetaData, inspect
from sqlalchemy.engine import URL, Connection

from tradebase.config import Settings, get_settings
from tradebase.core.db import Database, create_db_engine, database_url, ensure_sqlite_parent

VERSION_TABLES = {
    Database.main: "alembic_version",
    Database.credentials: "alembic_version_credentials",
}
FILE_TEMPLATE = "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s"


def script_location() -> Path:
    """The migrations folder: shipped inside the wheel, or ``migrations/`` of a checkout."""
    package_dir = Path(__file__).resolve().parent.parent
    shipped = package_dir / "_migrations"
    if (shipped / "env.py").exists():
        return shipped
    checkout = package_dir.parent.parent / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    raise FileNotFoundError("Tradebase's migrations folder is missing from this installation")


def alembic_config(
    database: Database,
    *,
    url: URL | None = None,
    settings: Settings | None = None,
    metadata: MetaData | None = None,
    stdout: Any = None,
) -> Config:
    """An Alembic `Config` bound to one of the two databases (nothing is read from an ini)."""
    settings = settings or get_settings()
    cfg = Config(stdout=stdout) if stdout is not None else Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("file_template", FILE_TEMPLATE)
    cfg.set_main_option("timezone", "UTC")
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(script_location() / "versions" / database.value))
    cfg.attributes["database"] = database
    cfg.attributes["url"] = url or database_url(database, settings)
    cfg.attributes["settings"] = settings
    if metadata is not None:
        cfg.attributes["metadata"] = metadata
    return cfg


_RELATIVE = re.compile(r"^[+-]\d+$")


def branch_revision(database: Database, revision: str) -> str:
    """Scope ``head``/``base``/relative steps to *database*'s branch; keep explicit ids."""
    if revision in ("head", "heads"):
        return f"{database.value}@head"
    if revision == "base":
        return f"{database.value}@base"
    if _RELATIVE.match(revision):
        return f"{database.value}@{revision}"
    return revision


def _prepare(cfg: Config) -> None:
    url: URL = cfg.attributes["url"]
    ensure_sqlite_parent(url)


def upgrade(database: Database, revision: str = "head", **kwargs: Any) -> None:
    """Migrate *database* up to *revision* (default: its branch head)."""
    cfg = alembic_config(database, **kwargs)
    _prepare(cfg)
    cfg.attributes["maintain_triggers"] = True
    command.upgrade(cfg, branch_revision(database, revision))


def downgrade(database: Database, revision: str, **kwargs: Any) -> None:
    """Migrate *database* down to *revision* (``base`` empties it)."""
    cfg = alembic_config(database, **kwargs)
    _prepare(cfg)
    cfg.attributes["maintain_triggers"] = True
    command.downgrade(cfg, branch_revision(database, revision))


def current_revision(database: Database, **kwargs: Any) -> str | None:
    """The revision *database* is at, or None when it has never been migrated."""
    cfg = alembic_config(database, **kwargs)
    url: URL = cfg.attributes["url"]
    sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if sqlite_file and not Path(str(url.database)).exists():
        return None  # not created yet; asking must not create it
    engine = create_db_engine(cfg.attributes["url"], cfg.attributes["settings"], pooled=False)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLES[database]}
            )
            heads = context.get_current_heads()
    finally:
        engine.dispose()
    return heads[0] if heads else None


def revision_of(connection: Connection, database: Database) -> str | None:
    """The revision recorded in an open connection's database."""
    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLES[database]}
    )
    heads = context.get_current_heads()
    return heads[0] if heads else None


def owns(database: Database, revision: str) -> bool:
    """Whether *revision* (an id or a unique prefix) is one of *database*'s migrations."""
    script = ScriptDirectory.from_config(alembic_config(database))
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def head_revision(database: Database) -> str:
    script = ScriptDirectory.from_config(alembic_config(database))
    head = script.get_revision(f"{database.value}@head")
    assert head is not None
    return head.revision


def history(database: Database) -> list[tuple[str, str | None, str, str]]:
    """(revision, down_revision, created date, message) of *database*'s branch, newest first."""
    script = ScriptDirectory.from_config(alembic_config(database))
    rows = []
    for rev in script.walk_revisions(base="base", head=f"{database.value}@head"):
        if database.value not in rev.branch_labels and not _on_branch(
            script, rev.revision, database
        ):
            continue
        down = (
            rev.down_revision
            if isinstance(rev.down_revision, str | None)
            else ",".join(rev.down_revision)
        )
        created = _created(rev.longdoc or rev.doc or "", Path(rev.path).name)
        rows.append((rev.revision, down, created, rev.doc or ""))
    return rows


def _on_branch(script: ScriptDirectory, revision: str, database: Database) -> bool:
    rev = script.get_revision(revision)
    return rev is not None and database.value in rev.branch_labels


def _created(_doc: str, filename: str) -> str:
    match = re.match(r"(\d{4}-\d{2}-\d{2})-(\d{2})(\d{2})", filename)
    return f"{match.group(1)} {match.group(2)}:{match.group(3)}" if match else ""


def revision(
    database: Database, message: str, *, autogenerate: bool = True, **kwargs: Any
) -> str | None:
    """Write a new revision on *database*'s branch; autogenerated from the models by default.

    Returns the new file's path, or None when autogenerate found nothing to do.
    """
    cfg = alembic_config(database, **kwargs)
    _prepare(cfg)
    cfg.attributes["skip_empty"] = autogenerate
    script = command.revision(
        cfg, message=message, autogenerate=autogenerate, head=f"{database.value}@head"
    )
    scripts = script if isinstance(script, list) else [script]
    paths = [s.path for s in scripts if s is not None]
    return paths[0] if paths else None


@dataclass
class CheckResult:
    database: Database
    current: str | None
    head: str
    differences: list[str] = field(default_factory=list)
    missing_triggers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.current == self.head and not self.differences and not self.missing_triggers


def check(database: Database, **kwargs: Any) -> CheckResult:
    """Compare the models with the database, which must be migrated to head; change nothing.

    Autogenerate's comparison (tables, columns, types, nullability, indexes, unique and
    foreign keys), plus CHECK constraints by name and the ``updated_at`` triggers.
    """
    from tradebase.core.ddl import missing_updated_at_triggers
    from tradebase.schema import metadata_for

    cfg = alembic_config(database, **kwargs)
    metadata: MetaData = cfg.attributes.get("metadata") or metadata_for(database)
    result = CheckResult(database, current_revision(database, **kwargs), head_revision(database))
    if result.current != result.head:
        return result
    engine = create_db_engine(cfg.attributes["url"], cfg.attributes["settings"], pooled=False)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts=migration_context_options(database, metadata)
            )
            with quiet_expression_indexes():
                diffs = compare_metadata(context, metadata)
            result.differences = [describe_diff(d) for d in diffs]
            result.differences += check_constraint_differences(connection, metadata)
            if connection.dialect.name == "sqlite":
                result.differences += sqlite_expression_index_differences(connection, metadata)
            result.missing_triggers = missing_updated_at_triggers(connection, metadata.tables)
    finally:
        engine.dispose()
    return result


def check_constraint_differences(connection: Connection, metadata: MetaData) -> list[str]:
    """CHECK constraints the models name that the database lacks, and the reverse
    (autogenerate does not compare CHECK constraints)."""
    from tradebase.core.ddl import check_name

    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    differences = []
    for table in metadata.sorted_tables:
        if table.name not in present:
            continue  # reported as a table to add
        expected = {check_name(c) for c in table.constraints if isinstance(c, CheckConstraint)}
        reflected = {
            str(c["name"]) for c in inspector.get_check_constraints(table.name) if c.get("name")
        }
        reflected -= set(table.columns.keys())  # MariaDB names its JSON checks after the column
        differences += [f"add check: {n} on {table.name}" for n in sorted(expected - reflected)]
        differences += [f"remove check: {n} on {table.name}" for n in sorted(reflected - expected)]
    return differences


@contextmanager
def quiet_expression_indexes() -> Iterator[None]:
    """SQLAlchemy cannot reflect SQLite indexes on expressions (``tb.num_key``) and says
    so, as does autogenerate, which then skips them: they are compared by name instead
    (`sqlite_expression_index_differences`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Skipped unsupported reflection of expression-based index"
        )
        warnings.filterwarnings(
            "ignore", message="autogenerate skipping metadata-specified expression-based index"
        )
        yield


def _has_expression(index: Index) -> bool:
    return any(not isinstance(e, Column) for e in index.expressions)


def sqlite_expression_index_differences(connection: Connection, metadata: MetaData) -> list[str]:
    """Indexes on expressions that the models name and SQLite lacks, and the reverse."""
    differences = []
    for table in metadata.sorted_tables:
        expected = {str(ix.name) for ix in table.indexes if _has_expression(ix)}
        names = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
            (table.name,),
        ).scalars()
        present = set()
        for name in names:
            quoted = connection.dialect.identifier_preparer.quote(name)
            info = connection.exec_driver_sql(f"PRAGMA index_info({quoted})").all()
            if any(row[2] is None for row in info):  # a column of the index is an expression
                present.add(str(name))
        differences += [f"add index: {n} on {table.name}" for n in sorted(expected - present)]
        differences += [f"remove index: {n} on {table.name}" for n in sorted(present - expected)]
    return differences


def describe_diff(diff: Any) -> str:
    """A one-line description of one autogenerate difference."""
    if isinstance(diff, list):
        return "; ".join(describe_diff(d) for d in diff)
    kind = diff[0]
    if kind in ("add_column", "remove_column"):
        _, _schema, table, column = diff
        return f"{kind.replace('_', ' ')}: {table}.{column.name} ({column.type})"
    if kind in ("add_table", "remove_table"):
        return f"{kind.replace('_', ' ')}: {diff[1].name}"
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        cols = ", ".join(str(c) for c in index.expressions)
        return f"{kind.replace('_', ' ')}: {index.name} on {index.table.name}({cols})"
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        constraint = diff[1]
        return f"{kind.replace('_', ' ')}: {constraint.name} on {constraint.table.name}"
    if kind.startswith("modify_"):
        _, _schema, table, column, _info, old, new = diff
        return f"{kind.replace('_', ' ')}: {table}.{column}: {old!r} -> {new!r}"
    return repr(diff)


# --- shared by env.py and check() --------------------------------------------------------


def _other_tables(database: Database) -> set[str]:
    from tradebase.schema import metadata_for

    other = Database.credentials if database is Database.main else Database.main
    return set(metadata_for(other).tables)


def migration_context_options(database: Database, metadata: MetaData) -> dict[str, Any]:
    """Options for Alembic's `MigrationContext` (env.py and `check` use the same)."""
    from tradebase.core import alembic_hooks

    other = _other_tables(database)
    own = set(metadata.tables)

    def include_name(name: str | None, type_: str, _parents: dict[str, Any]) -> bool:
        if type_ == "table" and name is not None:
            if name.startswith("alembic_version"):
                return False
            return name in own or name not in other
        return True

    return {
        "target_metadata": metadata,
        "version_table": VERSION_TABLES[database],
        "include_name": include_name,
        "compare_type": alembic_hooks.compare_type,
        "compare_server_default": alembic_hooks.compare_server_default,
        "render_item": alembic_hooks.render_item,
        "render_as_batch": True,
        "user_module_prefix": "tb.",
    }


def run_env(context: EnvironmentContext) -> None:
    """The body of ``migrations/env.py``: migrate one database, online."""
    from tradebase.core import alembic_hooks
    from tradebase.core.ddl import ensure_updated_at_triggers
    from tradebase.schema import metadata_for

    cfg = context.config
    database = Database(cfg.attributes["database"])
    metadata = cfg.attributes.get("metadata") or metadata_for(database)
    options = migration_context_options(database, metadata)
    if cfg.attributes.get("skip_empty"):
        options["process_revision_directives"] = alembic_hooks.skip_empty_revision
    engine = create_db_engine(cfg.attributes["url"], cfg.attributes["settings"], pooled=False)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode recreates tables; with foreign keys on, dropping the old table
                # would cascade into its children. Checked again before commit.
                _driver_execute(connection, "PRAGMA foreign_keys = OFF")
            context.configure(connection=connection, **options)
            with context.begin_transaction(), quiet_expression_indexes():
                context.run_migrations()
                if cfg.attributes.get("maintain_triggers"):
                    ensure_updated_at_triggers(connection, metadata.tables)
                if sqlite:
                    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise RuntimeError(f"migration broke foreign keys: {problems[:5]}")
            if connection.in_transaction():
                connection.commit()
    finally:
        engine.dispose()


def _driver_execute(connection: Connection, sql: str) -> None:
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute(sql)
