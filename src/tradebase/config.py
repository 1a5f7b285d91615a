"""Settings, read from the environment and `.env` with the prefix ``TRADEBASE_``.

Every setting has a description; ``tests/test_config.py`` checks that the README lists them all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "TRADEBASE_"

# Driver chosen when a URL names only the engine: psycopg 3 for PostgreSQL, PyMySQL for
# MariaDB/MySQL (pure Python, maintained, no client library to install).
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "sqlite": "sqlite",
}
_SUPPORTED_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")


_RETENTION = re.compile(r"^(?P<amount>[0-9]{1,5})(?P<unit>[dwy])(?::(?P<action>delete|archive))?$")
RETENTION_UNITS = {"d": "days", "w": "weeks", "y": "years"}


@dataclass(frozen=True)
class RetentionRule:
    """A parsed ``TRADEBASE_RETENTION_<TABLE>`` value: keep rows for *amount* *unit*
    (``days``, ``weeks`` or calendar ``years``), then delete or archive them; *action* None
    means the table's default action."""

    amount: int
    unit: str
    action: str | None


def parse_retention(value: str) -> RetentionRule | None:
    """Parse ``off`` (keep forever: None), ``90d``, ``4w``, ``7y``, optionally followed by
    ``:delete`` or ``:archive``; raise ValueError naming the expected form otherwise."""
    text = value.strip().lower()
    if text == "off":
        return None
    match = _RETENTION.match(text)
    if match is None or int(match["amount"]) == 0:
        raise ValueError(
            f"{value!r} is not a retention: write off, or a period such as 90d, 4w or 7y,"
            " optionally with :delete or :archive (e.g. 90d:archive)"
        )
    return RetentionRule(int(match["amount"]), RETENTION_UNITS[match["unit"]], match["action"])


class SettingsError(Exception):
    """A setting is missing or wrong; the message names it and says what is expected."""


def normalize_database_url(raw: str | URL) -> URL:
    """Parse a SQLAlchemy URL and fill in Tradebase's driver for a bare engine name."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL ({exc}); e.g. sqlite:///path/to/file.db") from exc
    name = url.drivername
    if "+" not in name:
        if name not in _DEFAULT_DRIVERS:
            raise ValueError(
                f"unsupported database engine {name!r}; use one of {', '.join(_SUPPORTED_BACKENDS)}"
            )
        url = url.set(drivername=_DEFAULT_DRIVERS[name])
    elif url.get_backend_name() not in _SUPPORTED_BACKENDS:
        raise ValueError(
            f"unsupported database engine {url.get_backend_name()!r}; "
            f"use one of {', '.join(_SUPPORTED_BACKENDS)}"
        )
    if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=os.environ.get("TRADEBASE_ENV_FILE", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path("tradebase-data"),
        description="Folder for the default SQLite databases, the key file and backups.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the main database. Default: SQLite file tradebase.db in DATA_DIR."
            " postgresql://… uses psycopg 3, mysql://… and mariadb://… use PyMySQL."
        ),
    )
    credentials_database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the encrypted credentials database. Default: SQLite file"
            " credentials.db in DATA_DIR."
        ),
    )
    pool_size: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=10, description="Connections kept open per process and database."
    )
    max_overflow: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=20, description="Extra connections allowed above POOL_SIZE under load."
    )
    pool_timeout: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="Seconds to wait for a free pooled connection."
    )
    pool_recycle: Annotated[int, Field(ge=-1)] = Field(
        default=3600, description="Seconds after which a pooled connection is replaced (-1: never)."
    )
    pool_pre_ping: bool = Field(
        default=True, description="Test each pooled connection before use (survives DB restarts)."
    )
    sqlite_busy_timeout_ms: Annotated[int, Field(ge=0)] = Field(
        default=30_000,
        description="How long a SQLite writer waits for the write lock before giving up (ms).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description=(
            "Master key for the credentials database and signed sessions. Default: a key file"
            " created in DATA_DIR with mode 0600 on first run."
        ),
    )
    previous_secret_keys: SecretStr | None = Field(
        default=None,
        description=(
            "Earlier master keys, comma-separated, accepted only to decrypt while"
            " `tradebase credentials rotate-key` re-encrypts every secret under SECRET_KEY;"
            " remove them once it reports the rotation finished."
        ),
    )
    key_file: Path | None = Field(
        default=None,
        description=(
            "Master key file used when SECRET_KEY is unset. Default: secret.key in DATA_DIR,"
            " created with mode 0600 on first use."
        ),
    )

    login_max_failures: Annotated[int, Field(ge=1)] = Field(
        default=5, description="Failed logins within LOGIN_WINDOW_MINUTES that lock an account."
    )
    login_window_minutes: Annotated[int, Field(ge=1)] = Field(
        default=15, description="Window in which failed logins are counted."
    )
    login_lockout_minutes: Annotated[int, Field(ge=1)] = Field(
        default=15, description="How long a locked account stays locked."
    )
    login_attempts_per_minute: Annotated[int, Field(ge=1)] = Field(
        default=30, description="Login attempts allowed per client address and minute."
    )
    redis_url: str | None = Field(
        default=None,
        description=(
            "Redis URL (redis://host:6379/0) for rate-limit counters shared by every server"
            " process, and the live stream's fan-out between server processes. Default: the"
            " counters live in the main database; events fan out by PostgreSQL LISTEN/NOTIFY,"
            " in-process on SQLite, by polling on MariaDB/MySQL."
        ),
    )
    session_hours: Annotated[int, Field(ge=1)] = Field(
        default=12, description="How long a dashboard login session lasts."
    )
    cookie_secure: bool = Field(
        default=False,
        description="Mark the session cookie Secure (set true when serving over HTTPS).",
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=1_048_576, description="Largest request body accepted; larger ones get 413."
    )

    signal_dedup_window_seconds: Annotated[int, Field(ge=1, le=604_800)] = Field(
        default=60,
        description=(
            "Signals: the same order_id (or, without one, the same body) from the same user"
            " within this many seconds is one signal; copies more than twice this apart are"
            " new signals (TradingView's order ids repeat with every trade)."
        ),
    )
    signal_wait_seconds: Annotated[float, Field(ge=0, le=30)] = Field(
        default=2.0,
        description=(
            "How long a repeated signal waits for the first copy's outcome before it answers"
            " 202 with the signal still received (TradingView gives up after 3 seconds)."
        ),
    )
    signal_sender_cache_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        default=1.0,
        description=(
            "How long a server process keeps the user a webhook key belongs to (reading it"
            " was a fifth of a webhook's time in the event loop). A change made through this"
            " process (a new key, signal settings, a user deactivated) applies at once; one"
            " made by another process after at most this long. 0: read it on every webhook."
        ),
    )
    signal_fast_lane: bool = Field(
        default=True,
        description=(
            "SQLite with group commit: book the usual signal (a market order on the default"
            " paper account, netting portfolio, with a price) on the driver with the"
            " services' own statements, the group's state read once; every other signal,"
            " and every refusal, goes through the services. False: every signal does."
        ),
    )
    signal_writer_process: bool = Field(
        default=True,
        description=(
            "A server on a SQLite file stores and executes its signals in a writer process"
            " of its own (group commit and the fast lane as in process), so that the writer"
            " does not wait for the event loop's interpreter lock at every SQLite call; the"
            " server answers with the outcome the writer committed. False: a writer thread"
            " in the server process does it."
        ),
    )
    signal_batch_max: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=64,
        description=(
            "SQLite and PostgreSQL: the most signals one writer of a server process stores"
            " in one transaction and then executes in the next (group commit: signals"
            " arriving together share two commits, each in a savepoint of its own; on SQLite"
            " a group of fast-lane signals shares one); 1 runs each signal in its own two"
            " transactions, as on MariaDB."
        ),
    )
    signal_max_order_value: Decimal | None = Field(
        default=None,
        gt=0,
        description=(
            "Risk check: the largest value (quantity x price) of an order a signal may place;"
            " a user's own signal settings can set a lower or higher one. Default: no limit."
        ),
    )
    signal_max_position_size: Decimal | None = Field(
        default=None,
        gt=0,
        description=(
            "Risk check: the largest position (absolute quantity of a symbol) a signal may"
            " leave in a portfolio; a user's signal settings can override it. Default: none."
        ),
    )
    signal_signature_window_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=300,
        description=(
            "Signed webhooks: how far the X-Tradebase-Timestamp of a signed signal may be"
            " from the server's clock; older or later ones are refused as replays."
        ),
    )

    # Retention (tradebase db prune): how long each table keeps its rows. Seed 002's table,
    # seed 003's orders archive (off by default) and seed 004's two years of price_data.
    retention_messages: str = Field(
        default="90d:archive",
        description="How long chat messages are kept before they move to messages_archive.",
    )
    retention_llm_usage: str = Field(
        default="365d:delete", description="How long LLM usage and cost rows are kept."
    )
    retention_audit_log: str = Field(
        default="7y:archive",
        description=(
            "How long audit entries stay in audit_log before they move to audit_log_archive"
            " (the chain keeps verifying from a checkpoint; archive only)."
        ),
    )
    retention_bot_metrics: str = Field(
        default="30d:delete", description="How long bot metrics are kept."
    )
    retention_system_metrics: str = Field(
        default="7d:delete", description="How long system metrics are kept."
    )
    retention_orders: str = Field(
        default="off",
        description=(
            "When finished orders (filled, cancelled, rejected, expired) with no fills or other"
            " rows pointing at them move to orders_archive with their events, e.g. 30d."
        ),
    )
    retention_price_data: str = Field(
        default="2y:delete", description="How long OHLCV bars (price_data) are kept."
    )
    retention_job_runs: str = Field(
        default="90d:delete",
        description="How long the worker's job history (job_runs) is kept.",
    )
    retention_events: str = Field(
        default="30d:delete",
        description="How long the outbox of events (GET /api/v1/events, stream replay) is kept.",
    )
    retention_webhook_deliveries: str = Field(
        default="30d:delete",
        description="How long the record of each outgoing webhook delivery attempt is kept.",
    )
    retention_batch_size: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=5_000, description="Rows deleted or archived per transaction by db prune."
    )

    @field_validator(
        "retention_messages",
        "retention_llm_usage",
        "retention_audit_log",
        "retention_bot_metrics",
        "retention_system_metrics",
        "retention_orders",
        "retention_price_data",
        "retention_job_runs",
        "retention_events",
        "retention_webhook_deliveries",
    )
    @classmethod
    def _valid_retention(cls, value: str) -> str:
        parse_retention(value)
        return value.strip().lower()

    gc_freeze: bool = Field(
        default=True,
        description=(
            "Once a server has started, move the objects it holds (the imported code, the"
            " app) out of the garbage collector's full collections (gc.freeze): each full"
            " collection over them stops the whole server for tens of milliseconds, which"
            " was the worst latency of a webhook under load."
        ),
    )

    # Events out: outgoing webhooks and the live stream (alerts/, events/).
    webhook_dispatch: bool = Field(
        default=True,
        description=(
            "Run the webhook dispatcher in this process (tradebase serve and tradebase"
            " worker): it turns new events into deliveries and sends them. Any number of"
            " processes may run it; each delivery is sent by one."
        ),
    )
    webhook_poll_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0,
        description=(
            "How often the dispatcher looks for new events and due retries (an event"
            " committed in the same process wakes it at once)."
        ),
    )
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = Field(
        default=10.0,
        description="Timeout of one webhook HTTP request (connect, write and read).",
    )
    webhook_retry_base_seconds: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=10.0,
        description=(
            "Back-off of failed deliveries: retry n waits BASE x 2^(n-1) seconds (10 s,"
            " 20 s, 40 s …), at most WEBHOOK_RETRY_MAX_SECONDS."
        ),
    )
    webhook_retry_max_seconds: Annotated[float, Field(gt=0, le=604_800)] = Field(
        default=3600.0, description="The longest wait between two attempts of one delivery."
    )
    webhook_max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        default=12, description="Attempts of one event to one webhook before it is given up."
    )
    webhook_disable_after: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=10,
        description=(
            "Consecutive failed attempts (of any events) after which a webhook is disabled;"
            " POST /api/v1/webhooks/{id}/enable turns it back on."
        ),
    )
    webhook_concurrency: Annotated[int, Field(ge=1, le=100)] = Field(
        default=4, description="Webhook requests one dispatcher sends at the same time."
    )
    webhook_allow_private: bool = Field(
        default=True,
        description=(
            "Allow webhook URLs on loopback and private addresses (self-hosted receivers);"
            " set false on a shared server so that users cannot reach its internal network."
        ),
    )
    events_poll_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=0.25,
        description=(
            "How often a server reads new events for its stream clients when nothing tells"
            " it (MariaDB/MySQL without REDIS_URL); with LISTEN/NOTIFY, Redis or SQLite, ten"
            " times this, as a safety net."
        ),
    )
    stream_heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=15.0,
        description="A stream client gets a ping message after this many seconds of quiet.",
    )

    backup_dir: Path | None = Field(
        default=None,
        description=(
            "Folder that `tradebase db backup` writes to and `tradebase db rotate` prunes."
            " Default: backups in DATA_DIR."
        ),
    )
    backup_format: Literal["auto", "native", "portable"] = Field(
        default="auto",
        description=(
            "How db backup dumps PostgreSQL and MariaDB: native (pg_dump, mariadb-dump),"
            " portable (Tradebase's JSON-lines export in one compressed tar; needs no client"
            " programs and restores into any engine), or auto: native when the program is"
            " installed, else portable. SQLite always uses its online backup API."
        ),
    )
    backup_keep_daily: Annotated[int, Field(ge=0)] = Field(
        default=7,
        description="Backup rotation: keep the newest backup of each of the last N days (UTC).",
    )
    backup_keep_weekly: Annotated[int, Field(ge=0)] = Field(
        default=4,
        description="Backup rotation: keep the newest backup of each of the last N ISO weeks.",
    )
    backup_keep_monthly: Annotated[int, Field(ge=0)] = Field(
        default=12,
        description="Backup rotation: keep the newest backup of each of the last N months.",
    )

    # The worker (tradebase worker): when each job runs. Cron (5 fields, or 6 with seconds
    # first), "every 15m" / "every 2s", or "off"; UTC.
    schedule_backup: str = Field(
        default="0 2 * * *",
        description="When the worker backs up both databases (and rotates the backups).",
    )
    schedule_prune: str = Field(
        default="30 2 * * *",
        description="When the worker deletes or archives rows past their retention.",
    )
    schedule_maintain: str = Field(
        default="0 3 * * 0",
        description="When the worker runs db maintain (vacuum, analyze, integrity check).",
    )
    schedule_snapshot: str = Field(
        default="5 0 * * *",
        description="When the worker records every portfolio's value and refreshes its P&L.",
    )
    schedule_settle: str = Field(
        default="*/15 * * * *",
        description="When the worker settles CNC positions into holdings after the close.",
    )
    schedule_expire_orders: str = Field(
        default="*/5 * * * *",
        description="When the worker expires DAY orders whose trading day has closed.",
    )
    schedule_recover: str = Field(
        default="every 1m",
        description=(
            "When the worker executes the signals and mirrored legs that a server which died"
            " left pending (each server also does it when it starts)."
        ),
    )
    schedule_broker_health: str = Field(
        default="every 30s",
        description=(
            "When the worker checks every live broker account (connection_status,"
            " last_connected) and resolves its orders left pending by an outage."
        ),
    )
    broker_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = Field(
        default=3.0,
        description=(
            "How long a call to a live broker (the OpenAlgo adapter) may take, connecting and"
            " reading, before it counts as unreachable (and the order fails over)."
        ),
    )
    broker_streams: bool = Field(
        default=True,
        description=(
            "Follow the live stream of each live account's broker when that broker is a"
            " Tradebase (brokers/stream.py): its order updates are asked about at once, and"
            " the connections are recorded in websocket_connections."
        ),
    )
    broker_stream_retry_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0,
        description=(
            "How long a broker stream waits before opening again after it ended or failed,"
            " and how often the list of live accounts to stream is read."
        ),
    )
    postback_window_seconds: Annotated[int, Field(ge=1, le=86_400)] = Field(
        default=300,
        description=(
            "Broker postbacks: how far a signed timestamp may be from now; older (replayed)"
            " or later ones are refused."
        ),
    )
    job_modules: str | None = Field(
        default=None,
        description=(
            "Python modules (comma-separated) that the worker imports to register more jobs"
            " with @tradebase.ops.jobs.job; their schedules: TRADEBASE_SCHEDULE_<NAME>."
        ),
    )
    job_lease_seconds: Annotated[int, Field(ge=2, le=86_400)] = Field(
        default=60,
        description=(
            "How long a running job's claim lasts without a heartbeat (the worker renews it"
            " every quarter of that): after it, another worker takes the slot over."
        ),
    )
    job_misfire_grace_seconds: Annotated[int, Field(ge=0)] = Field(
        default=3600,
        description=(
            "A slot missed while no worker ran is still run when a worker starts within this"
            " many seconds of it; older slots are left (the next one runs on time)."
        ),
    )
    job_max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3,
        description="Times a slot is started again after its worker died mid-job.",
    )

    @field_validator(
        "schedule_backup",
        "schedule_prune",
        "schedule_maintain",
        "schedule_snapshot",
        "schedule_settle",
        "schedule_expire_orders",
        "schedule_recover",
        "schedule_broker_health",
    )
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        from tradebase.ops.schedule import parse_schedule

        parse_schedule(value)
        return value.strip()

    @field_validator("database_url", "credentials_database_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        normalize_database_url(value)
        return value

    @property
    def main_url(self) -> URL:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return make_url(f"sqlite:///{(self.data_dir / 'tradebase.db').resolve()}")

    @property
    def backups_path(self) -> Path:
        """Where backups go: BACKUP_DIR, else ``backups`` in DATA_DIR."""
        return self.backup_dir if self.backup_dir is not None else self.data_dir / "backups"

    @property
    def credentials_url(self) -> URL:
        if self.credentials_database_url:
            return normalize_database_url(self.credentials_database_url)
        return make_url(f"sqlite:///{(self.data_dir / 'credentials.db').resolve()}")


def format_validation_error(exc: ValidationError) -> str:
    """One line per wrong setting, naming it by its environment variable."""
    lines = []
    for err in exc.errors():
        name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}{shown}")
    return "\n".join(lines)


def load_settings() -> Settings:
    """Read settings now, raising `SettingsError` with one line per wrong setting."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None


class _ProcessSettings:
    """`get_settings`: the settings of the process's environment, read once.

    Read once per environment (the ``TRADEBASE_*`` variables and the working directory,
    which the ``.env`` file and a relative data directory are found from), not once per
    process: a program that runs commands under another environment (tests with typer's
    CliRunner, which swaps ``os.environ`` for the length of a command) must not get
    settings that another thread read a moment before the swap. In a server the
    environment does not change, so this is one read."""

    _LIMIT = 16  # environments remembered at most

    def __init__(self) -> None:
        self._read: dict[tuple[object, ...], Settings] = {}

    def __call__(self) -> Settings:
        try:
            where = os.getcwd()
        except OSError:  # the working directory was removed
            where = ""
        key = (where, *sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
        found = self._read.get(key)
        if found is None:
            found = load_settings()
            read = self._read if len(self._read) < self._LIMIT else {}
            self._read = {**read, key: found}  # one assignment: safe for other threads
        return found

    def cache_clear(self) -> None:
        """Forget what was read (tests change the environment's files, not only its
        variables)."""
        self._read = {}


get_settings = _ProcessSettings()
