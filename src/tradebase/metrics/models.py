"""Bot and system metrics (seed 002)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tradebase.core.ddl import BigID, ck
from tradebase.core.models import Base
from tradebase.core.time import utc_now


class BotMetric(Base):
    __tablename__ = "bot_metrics"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    bot_type: Mapped[str] = mapped_column(String(50))  # e.g. telegram, twitter, treasury
    timestamp: Mapped[datetime] = mapped_column(default=utc_now)
    messages_processed: Mapped[int | None]
    commands_executed: Mapped[int | None]
    errors_count: Mapped[int | None]
    avg_response_time_ms: Mapped[Decimal | None]
    active_users: Mapped[int | None]

    __table_args__ = (
        Index("idx_bot_metrics_type_time", "bot_type", "timestamp"),
        Index("idx_bot_metrics_timestamp", "timestamp"),
        ck("messages_nonnegative", "messages_processed >= 0"),
        ck("commands_nonnegative", "commands_executed >= 0"),
        ck("errors_nonnegative", "errors_count >= 0"),
        ck("active_users_nonnegative", "active_users >= 0"),
        ck("response_time_nonnegative", "{num:avg_response_time_ms} >= 0"),
    )


class SystemMetric(Base):
    __tablename__ = "system_metrics"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(default=utc_now)
    component: Mapped[str] = mapped_column(String(50))
    cpu_percent: Mapped[Decimal | None]
    memory_mb: Mapped[Decimal | None]
    disk_percent: Mapped[Decimal | None]
    active_connections: Mapped[int | None]
    requests_per_second: Mapped[Decimal | None]
    error_rate: Mapped[Decimal | None]

    __table_args__ = (
        Index("idx_system_metrics_component_time", "component", "timestamp"),
        # Seed 002 indexes (component, DATE_TRUNC('hour', timestamp)): not portable; hourly
        # roll-ups over a time range scan this one.
        Index("idx_metrics_hourly", "timestamp", "component"),
        ck("cpu_percent_range", "{num:cpu_percent} >= 0 AND {num:cpu_percent} <= 100"),
        ck("disk_percent_range", "{num:disk_percent} >= 0 AND {num:disk_percent} <= 100"),
        ck("memory_nonnegative", "{num:memory_mb} >= 0"),
        ck("connections_nonnegative", "active_connections >= 0"),
        ck("rps_nonnegative", "{num:requests_per_second} >= 0"),
        ck("error_rate_range", "{num:error_rate} >= 0 AND {num:error_rate} <= 1"),
    )
