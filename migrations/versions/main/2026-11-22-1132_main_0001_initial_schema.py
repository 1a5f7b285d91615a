"""initial schema of the main database

Revision ID: main_0001
Revises:
Create Date: 2026-11-22 11:34:26.289127+00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import tradebase.core.ddl as tb

revision: str = "main_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("main",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log_archive",
        sa.Column("id", tb.BigID(), autoincrement=False, nullable=False),
        sa.Column("timestamp", tb.UTCDateTime(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("actor", sa.String(length=100), autoincrement=False, nullable=True),
        sa.Column("action", sa.String(length=100), autoincrement=False, nullable=False),
        sa.Column("resource_type", sa.String(length=50), autoincrement=False, nullable=True),
        sa.Column("resource_id", sa.String(length=100), autoincrement=False, nullable=True),
        sa.Column("ip_address", sa.String(length=45), autoincrement=False, nullable=True),
        sa.Column("user_agent", sa.String(length=500), autoincrement=False, nullable=True),
        sa.Column("details", tb.JSONDoc(), autoincrement=False, nullable=True),
        sa.Column("message", sa.Text(), autoincrement=False, nullable=True),
        sa.Column("prev_hash", sa.String(length=64), autoincrement=False, nullable=True),
        sa.Column("row_hash", sa.String(length=64), autoincrement=False, nullable=True),
        sa.Column("archived_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log_archive")),
    )
    with op.batch_alter_table("audit_log_archive", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_archive_archived_at", ["archived_at"], unique=False)

    op.create_table(
        "bot_metrics",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("bot_type", sa.String(length=50), nullable=False),
        sa.Column("timestamp", tb.UTCDateTime(), nullable=False),
        sa.Column("messages_processed", sa.Integer(), nullable=True),
        sa.Column("commands_executed", sa.Integer(), nullable=True),
        sa.Column("errors_count", sa.Integer(), nullable=True),
        sa.Column("avg_response_time_ms", tb.ExactDecimal(), nullable=True),
        sa.Column("active_users", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_metrics")),
        tb.ck(op.f("ck_bot_metrics_active_users_nonnegative"), "active_users >= 0"),
        tb.ck(op.f("ck_bot_metrics_commands_nonnegative"), "commands_executed >= 0"),
        tb.ck(op.f("ck_bot_metrics_errors_nonnegative"), "errors_count >= 0"),
        tb.ck(op.f("ck_bot_metrics_messages_nonnegative"), "messages_processed >= 0"),
        tb.ck(op.f("ck_bot_metrics_response_time_nonnegative"), "{num:avg_response_time_ms} >= 0"),
    )
    with op.batch_alter_table("bot_metrics", schema=None) as batch_op:
        batch_op.create_index("idx_bot_metrics_timestamp", ["timestamp"], unique=False)
        batch_op.create_index("idx_bot_metrics_type_time", ["bot_type", "timestamp"], unique=False)

    op.create_table(
        "messages_archive",
        sa.Column("id", tb.BigID(), autoincrement=False, nullable=False),
        sa.Column("conversation_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("role", sa.String(length=10), autoincrement=False, nullable=False),
        sa.Column("content", sa.Text(), autoincrement=False, nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), autoincrement=False, nullable=False),
        sa.Column("tokens_used", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("model", sa.String(length=100), autoincrement=False, nullable=True),
        sa.Column("latency_ms", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("metadata", tb.JSONDoc(), autoincrement=False, nullable=False),
        sa.Column("archived_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages_archive")),
    )
    with op.batch_alter_table("messages_archive", schema=None) as batch_op:
        batch_op.create_index("ix_messages_archive_archived_at", ["archived_at"], unique=False)

    op.create_table(
        "orders_archive",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("account_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("portfolio_id", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("strategy_id", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("deployment_id", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("signal_id", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("parent_order_id", sa.Integer(), autoincrement=False, nullable=True),
        sa.Column("exchange_order_id", sa.String(length=100), autoincrement=False, nullable=True),
        sa.Column("client_order_id", sa.String(length=100), autoincrement=False, nullable=True),
        sa.Column("symbol", sa.String(length=50), autoincrement=False, nullable=False),
        sa.Column("exchange", sa.String(length=50), autoincrement=False, nullable=False),
        sa.Column("side", sa.String(length=4), autoincrement=False, nullable=False),
        sa.Column("order_type", sa.String(length=20), autoincrement=False, nullable=False),
        sa.Column("product", sa.String(length=10), autoincrement=False, nullable=False),
        sa.Column("time_in_force", sa.String(length=3), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=20), autoincrement=False, nullable=False),
        sa.Column("quantity", tb.ExactDecimal(), autoincrement=False, nullable=False),
        sa.Column("filled_quantity", tb.ExactDecimal(), autoincrement=False, nullable=False),
        sa.Column("price", tb.ExactDecimal(), autoincrement=False, nullable=True),
        sa.Column("trigger_price", tb.ExactDecimal(), autoincrement=False, nullable=True),
        sa.Column("average_fill_price", tb.ExactDecimal(), autoincrement=False, nullable=True),
        sa.Column("disclosed_quantity", tb.ExactDecimal(), autoincrement=False, nullable=True),
        sa.Column("fee", tb.ExactDecimal(), autoincrement=False, nullable=False),
        sa.Column("fee_currency", sa.String(length=10), autoincrement=False, nullable=True),
        sa.Column("algo_params", tb.JSONDoc(), autoincrement=False, nullable=True),
        sa.Column("reject_reason", sa.Text(), autoincrement=False, nullable=True),
        sa.Column("tag", sa.String(length=100), autoincrement=False, nullable=True),
        sa.Column("placed_at", tb.UTCDateTime(), autoincrement=False, nullable=True),
        sa.Column("filled_at", tb.UTCDateTime(), autoincrement=False, nullable=True),
        sa.Column("cancelled_at", tb.UTCDateTime(), autoincrement=False, nullable=True),
        sa.Column("expires_at", tb.UTCDateTime(), autoincrement=False, nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), autoincrement=False, nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), autoincrement=False, nullable=False),
        sa.Column("archived_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders_archive")),
    )
    with op.batch_alter_table("orders_archive", schema=None) as batch_op:
        batch_op.create_index("ix_orders_archive_archived_at", ["archived_at"], unique=False)

    op.create_table(
        "price_data",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("exchange", sa.String(length=50), nullable=False),
        sa.Column("timeframe", sa.String(length=10), server_default="1m", nullable=False),
        sa.Column("timestamp", tb.UTCDateTime(), nullable=False),
        sa.Column("open", tb.ExactDecimal(), nullable=False),
        sa.Column("high", tb.ExactDecimal(), nullable=False),
        sa.Column("low", tb.ExactDecimal(), nullable=False),
        sa.Column("close", tb.ExactDecimal(), nullable=False),
        sa.Column("volume", tb.ExactDecimal(), nullable=False),
        sa.Column("vwap", tb.ExactDecimal(), nullable=True),
        sa.Column("num_trades", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_data")),
        sa.UniqueConstraint(
            "symbol", "exchange", "timeframe", "timestamp", name="uq_price_data_bar"
        ),
        tb.ck(
            op.f("ck_price_data_close_in_range"),
            "{num:close} >= {num:low} AND {num:close} <= {num:high}",
        ),
        tb.ck(op.f("ck_price_data_high_low"), "{num:high} >= {num:low}"),
        tb.ck(op.f("ck_price_data_num_trades_nonnegative"), "num_trades >= 0"),
        tb.ck(
            op.f("ck_price_data_open_in_range"),
            "{num:open} >= {num:low} AND {num:open} <= {num:high}",
        ),
        tb.ck(op.f("ck_price_data_volume_nonnegative"), "{num:volume} >= 0"),
    )
    with op.batch_alter_table("price_data", schema=None) as batch_op:
        batch_op.create_index("idx_price_data_timestamp", ["timestamp"], unique=False)
        batch_op.create_index("idx_price_exchange_time", ["exchange", "timestamp"], unique=False)
        batch_op.create_index("idx_price_symbol_time", ["symbol", "timestamp"], unique=False)

    op.create_table(
        "system_metrics",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("timestamp", tb.UTCDateTime(), nullable=False),
        sa.Column("component", sa.String(length=50), nullable=False),
        sa.Column("cpu_percent", tb.ExactDecimal(), nullable=True),
        sa.Column("memory_mb", tb.ExactDecimal(), nullable=True),
        sa.Column("disk_percent", tb.ExactDecimal(), nullable=True),
        sa.Column("active_connections", sa.Integer(), nullable=True),
        sa.Column("requests_per_second", tb.ExactDecimal(), nullable=True),
        sa.Column("error_rate", tb.ExactDecimal(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_metrics")),
        tb.ck(op.f("ck_system_metrics_connections_nonnegative"), "active_connections >= 0"),
        tb.ck(
            op.f("ck_system_metrics_cpu_percent_range"),
            "{num:cpu_percent} >= 0 AND {num:cpu_percent} <= 100",
        ),
        tb.ck(
            op.f("ck_system_metrics_disk_percent_range"),
            "{num:disk_percent} >= 0 AND {num:disk_percent} <= 100",
        ),
        tb.ck(
            op.f("ck_system_metrics_error_rate_range"),
            "{num:error_rate} >= 0 AND {num:error_rate} <= 1",
        ),
        tb.ck(op.f("ck_system_metrics_memory_nonnegative"), "{num:memory_mb} >= 0"),
        tb.ck(op.f("ck_system_metrics_rps_nonnegative"), "{num:requests_per_second} >= 0"),
    )
    with op.batch_alter_table("system_metrics", schema=None) as batch_op:
        batch_op.create_index("idx_metrics_hourly", ["timestamp", "component"], unique=False)
        batch_op.create_index(
            "idx_system_metrics_component_time", ["component", "timestamp"], unique=False
        )

    op.create_table(
        "trading_hours_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("exchange", sa.String(length=50), nullable=True),
        sa.Column("timezone", sa.String(length=50), server_default="Asia/Kolkata", nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_hours_templates")),
    )
    with op.batch_alter_table("trading_hours_templates", schema=None) as batch_op:
        batch_op.create_index("idx_trading_hours_templates_exchange", ["exchange"], unique=False)
        batch_op.create_index("idx_trading_hours_templates_name", ["name"], unique=True)

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=80), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=20), server_default="trader", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("email_verified", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("two_factor_enabled", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("settings", tb.JSONDoc(), server_default=tb.json_default("{}"), nullable=False),
        sa.Column("webhook_key_hash", sa.String(length=64), nullable=True),
        sa.Column("last_login", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        tb.ck(op.f("ck_users_username_length"), "{len:username} >= 3"),
        tb.ck_in(op.f("ck_users_role"), "role", ["admin", "trader", "viewer"]),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index("idx_users_email", ["email"], unique=True)
        batch_op.create_index("idx_users_username", ["username"], unique=True)
        batch_op.create_index("idx_users_webhook_key_hash", ["webhook_key_hash"], unique=True)

    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("type", sa.String(length=50), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=True),
        sa.Column("condition", tb.JSONDoc(), nullable=False),
        sa.Column("severity", sa.String(length=10), server_default="info", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("triggered_at", tb.UTCDateTime(), nullable=True),
        sa.Column("trigger_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alert_rules_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
        tb.ck(op.f("ck_alert_rules_trigger_count_nonnegative"), "trigger_count >= 0"),
        tb.ck_in(
            op.f("ck_alert_rules_severity"), "severity", ["info", "warning", "error", "critical"]
        ),
    )
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.create_index("idx_alerts_user_active", ["user_id", "is_active"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("scopes", tb.JSONDoc(), server_default=tb.json_default("[]"), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), server_default="60", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("expires_at", tb.UTCDateTime(), nullable=True),
        sa.Column("last_used_at", tb.UTCDateTime(), nullable=True),
        sa.Column("total_requests", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        tb.ck(op.f("ck_api_keys_rate_limit_positive"), "rate_limit_per_minute > 0"),
        tb.ck(op.f("ck_api_keys_total_requests_nonnegative"), "total_requests >= 0"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("idx_api_keys_hash", ["key_hash"], unique=True)
        batch_op.create_index("idx_api_keys_prefix", ["key_prefix"], unique=False)
        batch_op.create_index("idx_api_keys_user", ["user_id"], unique=False)

    op.create_table(
        "audit_log",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("timestamp", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("resource_type", sa.String(length=50), nullable=True),
        sa.Column("resource_id", sa.String(length=100), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("details", tb.JSONDoc(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("row_hash", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_audit_log_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("idx_action_timestamp", ["action", "timestamp"], unique=False)
        batch_op.create_index("idx_activity_user_action", ["user_id", "action"], unique=False)
        batch_op.create_index("idx_audit_action", ["action"], unique=False)
        batch_op.create_index("idx_audit_row_hash", ["row_hash"], unique=False)
        batch_op.create_index("idx_audit_timestamp", ["timestamp"], unique=False)
        batch_op.create_index("idx_audit_user", ["user_id"], unique=False)
        batch_op.create_index("idx_user_timestamp", ["user_id", "timestamp"], unique=False)

    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("is_archived", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("metadata", tb.JSONDoc(), server_default=tb.json_default("{}"), nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_conversations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.create_index("idx_conversations_updated", ["updated_at"], unique=False)
        batch_op.create_index("idx_conversations_user_id", ["user_id"], unique=False)
        batch_op.create_index(
            "idx_conversations_user_recent", ["user_id", "is_archived", "updated_at"], unique=False
        )

    op.create_table(
        "market_holidays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("holiday_type", sa.String(length=20), server_default="full_day", nullable=False),
        sa.Column("session_open", sa.Time(), nullable=True),
        sa.Column("session_close", sa.Time(), nullable=True),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["trading_hours_templates.id"],
            name=op.f("fk_market_holidays_template_id_trading_hours_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_holidays")),
        sa.UniqueConstraint(
            "template_id", "date", name=op.f("uq_market_holidays_template_id_date")
        ),
        tb.ck_in(
            op.f("ck_market_holidays_holiday_type"),
            "holiday_type",
            ["full_day", "half_day", "muhurat", "special"],
        ),
    )
    with op.batch_alter_table("market_holidays", schema=None) as batch_op:
        batch_op.create_index("idx_market_holidays_date", ["date"], unique=False)
        batch_op.create_index("idx_market_holidays_template_id", ["template_id"], unique=False)

    op.create_table(
        "ml_predictions",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=True),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("exchange", sa.String(length=50), nullable=True),
        sa.Column("predicted_price", tb.ExactDecimal(), nullable=True),
        sa.Column("predicted_direction", sa.String(length=10), nullable=True),
        sa.Column("confidence", tb.ExactDecimal(), nullable=True),
        sa.Column("feature_importance", tb.JSONDoc(), nullable=True),
        sa.Column("predicted_at", tb.UTCDateTime(), nullable=False),
        sa.Column("prediction_horizon", sa.Integer(), nullable=True),
        sa.Column("reference_price", tb.ExactDecimal(), nullable=True),
        sa.Column("actual_price", tb.ExactDecimal(), nullable=True),
        sa.Column("prediction_error", tb.ExactDecimal(), nullable=True),
        sa.Column("was_correct", sa.Boolean(), nullable=True),
        sa.Column("evaluated_at", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_ml_predictions_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ml_predictions")),
        tb.ck(
            op.f("ck_ml_predictions_confidence_range"),
            "{num:confidence} >= 0 AND {num:confidence} <= 1",
        ),
        tb.ck(op.f("ck_ml_predictions_error_nonnegative"), "{num:prediction_error} >= 0"),
        tb.ck(op.f("ck_ml_predictions_horizon_positive"), "prediction_horizon > 0"),
        tb.ck_in(
            op.f("ck_ml_predictions_predicted_direction"),
            "predicted_direction",
            ["up", "down", "neutral"],
            nullable=True,
        ),
    )
    with op.batch_alter_table("ml_predictions", schema=None) as batch_op:
        batch_op.create_index(
            "idx_ml_predictions_model_time", ["model_name", "predicted_at"], unique=False
        )
        batch_op.create_index("idx_ml_predictions_predicted_at", ["predicted_at"], unique=False)
        batch_op.create_index("idx_ml_predictions_user", ["user_id"], unique=False)
        batch_op.create_index("idx_prediction_model", ["model_name"], unique=False)
        batch_op.create_index(
            "idx_prediction_symbol_time", ["symbol", "predicted_at"], unique=False
        )

    op.create_table(
        "strategies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("strategy_type", sa.String(length=30), server_default="custom", nullable=False),
        sa.Column("config", tb.JSONDoc(), server_default=tb.json_default("{}"), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("is_backtest", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("total_pnl", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("win_rate", tb.ExactDecimal(), nullable=True),
        sa.Column("sharpe_ratio", tb.ExactDecimal(), nullable=True),
        sa.Column("num_trades", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_signal_at", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_strategies_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strategies")),
        sa.UniqueConstraint("user_id", "name", name=op.f("uq_strategies_user_id_name")),
        tb.ck(op.f("ck_strategies_num_trades_nonnegative"), "num_trades >= 0"),
        tb.ck(
            op.f("ck_strategies_win_rate_percent"), "{num:win_rate} >= 0 AND {num:win_rate} <= 100"
        ),
        tb.ck_in(
            op.f("ck_strategies_strategy_type"),
            "strategy_type",
            [
                "grid_trading",
                "dca",
                "momentum",
                "mean_reversion",
                "statistical_arbitrage",
                "market_making",
                "whale_following",
                "liquidation_hunting",
                "yield_optimization",
                "arbitrage",
                "custom",
            ],
        ),
    )
    with op.batch_alter_table("strategies", schema=None) as batch_op:
        batch_op.create_index("idx_strategies_active", ["is_active"], unique=False)
        batch_op.create_index("idx_strategies_num_trades", ["num_trades"], unique=False)
        batch_op.create_index("idx_strategy_type", ["strategy_type"], unique=False)
        batch_op.create_index("idx_strategy_user", ["user_id"], unique=False)

    op.create_table(
        "trading_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("account_name", sa.String(length=100), nullable=False),
        sa.Column("broker", sa.String(length=50), server_default="paper", nullable=False),
        sa.Column(
            "host_url", sa.String(length=200), server_default="http://127.0.0.1:5000", nullable=True
        ),
        sa.Column(
            "websocket_url",
            sa.String(length=200),
            server_default="ws://127.0.0.1:8765",
            nullable=True,
        ),
        sa.Column("is_primary", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("is_paper", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="100", nullable=False),
        sa.Column("last_connected", tb.UTCDateTime(), nullable=True),
        sa.Column(
            "connection_status", sa.String(length=20), server_default="disconnected", nullable=False
        ),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_trading_accounts_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_accounts")),
        sa.UniqueConstraint("user_id", "account_name", name="unique_user_account"),
        tb.ck(op.f("ck_trading_accounts_check_account_name_length"), "{len:account_name} >= 3"),
        tb.ck(op.f("ck_trading_accounts_check_broker_name"), "{len:broker} >= 1"),
        tb.ck_in(
            op.f("ck_trading_accounts_connection_status"),
            "connection_status",
            ["connected", "connecting", "disconnected", "error"],
        ),
    )
    with op.batch_alter_table("trading_accounts", schema=None) as batch_op:
        batch_op.create_index(
            "idx_accounts_user_primary",
            ["user_id", "is_primary"],
            unique=False,
            postgresql_include=["account_name", "broker"],
        )
        batch_op.create_index("idx_trading_accounts_is_active", ["is_active"], unique=False)
        batch_op.create_index("idx_trading_accounts_is_primary", ["is_primary"], unique=False)
        batch_op.create_index("idx_trading_accounts_user_id", ["user_id"], unique=False)

    op.create_table(
        "trading_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("day_of_week", sa.Integer(), nullable=False),
        sa.Column("pre_market_start", sa.Time(), nullable=True),
        sa.Column("pre_market_end", sa.Time(), nullable=True),
        sa.Column("market_open", sa.Time(), nullable=True),
        sa.Column("market_close", sa.Time(), nullable=True),
        sa.Column("post_market_start", sa.Time(), nullable=True),
        sa.Column("post_market_end", sa.Time(), nullable=True),
        sa.Column("is_trading_day", sa.Boolean(), server_default="1", nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["trading_hours_templates.id"],
            name=op.f("fk_trading_sessions_template_id_trading_hours_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_sessions")),
        tb.ck(op.f("ck_trading_sessions_day_of_week_range"), "day_of_week BETWEEN 0 AND 6"),
        tb.ck(
            op.f("ck_trading_sessions_open_before_close"),
            "market_open IS NULL OR market_close IS NULL OR market_open < market_close",
        ),
    )
    with op.batch_alter_table("trading_sessions", schema=None) as batch_op:
        batch_op.create_index("idx_trading_sessions_day_of_week", ["day_of_week"], unique=False)
        batch_op.create_index("idx_trading_sessions_template_id", ["template_id"], unique=False)

    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("events", tb.JSONDoc(), nullable=False),
        sa.Column("secret_last4", sa.String(length=4), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("last_called_at", tb.UTCDateTime(), nullable=True),
        sa.Column("failure_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("disabled_at", tb.UTCDateTime(), nullable=True),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_webhooks_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
        tb.ck(op.f("ck_webhooks_failure_count_nonnegative"), "failure_count >= 0"),
    )
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.create_index("idx_webhooks_active", ["is_active"], unique=False)
        batch_op.create_index("idx_webhooks_user", ["user_id"], unique=False)

    op.create_table(
        "llm_usage",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("timestamp", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", tb.ExactDecimal(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("request_type", sa.String(length=50), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_llm_usage_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_llm_usage_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_usage")),
        tb.ck(op.f("ck_llm_usage_cost_nonnegative"), "{num:cost_usd} >= 0"),
        tb.ck(op.f("ck_llm_usage_input_tokens_nonnegative"), "input_tokens >= 0"),
        tb.ck(op.f("ck_llm_usage_latency_nonnegative"), "latency_ms >= 0"),
        tb.ck(op.f("ck_llm_usage_output_tokens_nonnegative"), "output_tokens >= 0"),
    )
    with op.batch_alter_table("llm_usage", schema=None) as batch_op:
        batch_op.create_index("idx_llm_daily_provider", ["timestamp", "provider"], unique=False)
        batch_op.create_index("idx_llm_usage_conversation", ["conversation_id"], unique=False)
        batch_op.create_index("idx_llm_usage_provider_model", ["provider", "model"], unique=False)
        batch_op.create_index("idx_llm_usage_timestamp", ["timestamp"], unique=False)
        batch_op.create_index("idx_llm_usage_user", ["user_id"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("tokens_used", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("metadata", tb.JSONDoc(), server_default=tb.json_default("{}"), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        tb.ck(op.f("ck_messages_latency_nonnegative"), "latency_ms >= 0"),
        tb.ck(op.f("ck_messages_tokens_nonnegative"), "tokens_used >= 0"),
        tb.ck_in(op.f("ck_messages_role"), "role", ["user", "assistant", "system", "tool"]),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("idx_messages_conversation", ["conversation_id"], unique=False)
        batch_op.create_index(
            "idx_messages_conversation_order", ["conversation_id", "created_at"], unique=False
        )
        batch_op.create_index("idx_messages_created", ["created_at"], unique=False)

    op.create_table(
        "portfolios",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("base_currency", sa.String(length=10), server_default="USD", nullable=False),
        sa.Column("total_value_usd", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("cash_balance_usd", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("total_pnl", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("total_pnl_percent", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("daily_pnl", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("sharpe_ratio", tb.ExactDecimal(), nullable=True),
        sa.Column("max_drawdown", tb.ExactDecimal(), nullable=True),
        sa.Column("win_rate", tb.ExactDecimal(), nullable=True),
        sa.Column("is_paper", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("allow_margin", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("position_mode", sa.String(length=10), server_default="netting", nullable=False),
        sa.Column("periods_per_year", sa.Integer(), server_default="365", nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_portfolios_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_portfolios_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolios")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_portfolios_account_id_name")),
        tb.ck(
            op.f("ck_portfolios_cash_nonnegative_without_margin"),
            "allow_margin OR {num:cash_balance_usd} >= 0",
        ),
        tb.ck(op.f("ck_portfolios_max_drawdown_nonpositive"), "{num:max_drawdown} <= 0"),
        tb.ck(op.f("ck_portfolios_periods_per_year_positive"), "periods_per_year > 0"),
        tb.ck(
            op.f("ck_portfolios_win_rate_percent"), "{num:win_rate} >= 0 AND {num:win_rate} <= 100"
        ),
        tb.ck_in(op.f("ck_portfolios_position_mode"), "position_mode", ["netting", "hedging"]),
    )
    with op.batch_alter_table("portfolios", schema=None) as batch_op:
        batch_op.create_index("idx_portfolio_user", ["user_id"], unique=False)
        batch_op.create_index("idx_portfolios_account", ["account_id"], unique=False)

    op.create_table(
        "signals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("strategy_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=True),
        sa.Column("exchange", sa.String(length=50), nullable=True),
        sa.Column("direction", sa.String(length=4), nullable=True),
        sa.Column("quantity", tb.ExactDecimal(), nullable=True),
        sa.Column("price", tb.ExactDecimal(), nullable=True),
        sa.Column("order_type", sa.String(length=20), nullable=True),
        sa.Column("limit_price", tb.ExactDecimal(), nullable=True),
        sa.Column("stop_price", tb.ExactDecimal(), nullable=True),
        sa.Column("product", sa.String(length=10), nullable=True),
        sa.Column("status", sa.String(length=12), server_default="received", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("position_status", sa.String(length=20), nullable=True),
        sa.Column("trade_action", sa.String(length=10), nullable=True),
        sa.Column("trade_direction", sa.String(length=10), nullable=True),
        sa.Column("position_size", tb.ExactDecimal(), nullable=True),
        sa.Column("hedging_enabled", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("deal_id", sa.String(length=100), nullable=True),
        sa.Column("comment", sa.String(length=500), nullable=True),
        sa.Column("signal_data", tb.JSONDoc(), nullable=True),
        sa.Column("raw_payload", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("source_ip", sa.String(length=45), nullable=True),
        sa.Column("outcome", tb.JSONDoc(), nullable=True),
        sa.Column("timestamp", tb.UTCDateTime(), nullable=True),
        sa.Column("received_at", tb.UTCDateTime(), nullable=False),
        sa.Column("processed_at", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_signals_account_id_trading_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_signals_strategy_id_strategies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_signals_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
        sa.UniqueConstraint("user_id", "order_id", name="uq_signals_user_order_id"),
        tb.ck(op.f("ck_signals_limit_price_positive"), "{num:limit_price} > 0"),
        tb.ck(op.f("ck_signals_price_positive"), "{num:price} > 0"),
        tb.ck(op.f("ck_signals_quantity_positive"), "{num:quantity} > 0"),
        tb.ck(op.f("ck_signals_stop_price_positive"), "{num:stop_price} > 0"),
        tb.ck_in(op.f("ck_signals_direction"), "direction", ["buy", "sell"], nullable=True),
        tb.ck_in(
            op.f("ck_signals_order_type"),
            "order_type",
            ["market", "limit", "stop_loss", "stop_limit", "twap", "vwap"],
            nullable=True,
        ),
        tb.ck_in(op.f("ck_signals_product"), "product", ["MIS", "CNC", "NRML"], nullable=True),
        tb.ck_in(op.f("ck_signals_source"), "source", ["webhook", "api", "cli", "python"]),
        tb.ck_in(
            op.f("ck_signals_status"),
            "status",
            ["received", "processing", "processed", "rejected", "failed"],
        ),
        tb.ck_in(
            op.f("ck_signals_trade_action"),
            "trade_action",
            ["open", "close", "modify"],
            nullable=True,
        ),
    )
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.create_index("idx_signals_account", ["account_id"], unique=False)
        batch_op.create_index("idx_signals_order_id", ["order_id"], unique=False)
        batch_op.create_index("idx_signals_status", ["status"], unique=False)
        batch_op.create_index(
            "idx_signals_status_received", ["status", "received_at"], unique=False
        )
        batch_op.create_index("idx_signals_strategy", ["strategy_id"], unique=False)
        batch_op.create_index("idx_signals_symbol", ["symbol"], unique=False)
        batch_op.create_index("idx_signals_timestamp", ["received_at"], unique=False)
        batch_op.create_index("idx_signals_user_received", ["user_id", "received_at"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("payload", tb.JSONDoc(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("status", sa.String(length=10), server_default="pending", nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("next_attempt_at", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("delivered_at", tb.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        tb.ck(op.f("ck_webhook_deliveries_attempt_positive"), "attempt > 0"),
        tb.ck_in(
            op.f("ck_webhook_deliveries_status"), "status", ["pending", "succeeded", "failed"]
        ),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "idx_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index("idx_webhook_deliveries_event", ["event_id"], unique=False)
        batch_op.create_index(
            "idx_webhook_deliveries_webhook", ["webhook_id", "created_at"], unique=False
        )

    op.create_table(
        "websocket_connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="disconnected", nullable=False),
        sa.Column("connected_at", tb.UTCDateTime(), nullable=True),
        sa.Column("disconnected_at", tb.UTCDateTime(), nullable=True),
        sa.Column("messages_received", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_heartbeat", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_websocket_connections_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_websocket_connections")),
        tb.ck_in(
            op.f("ck_websocket_connections_status"),
            "status",
            ["connected", "connecting", "disconnected", "error"],
        ),
    )
    with op.batch_alter_table("websocket_connections", schema=None) as batch_op:
        batch_op.create_index("idx_websocket_connections_account_id", ["account_id"], unique=False)
        batch_op.create_index(
            "idx_websocket_connections_connection_id", ["connection_id"], unique=True
        )
        batch_op.create_index("idx_websocket_connections_status", ["status"], unique=False)

    op.create_table(
        "holdings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("exchange", sa.String(length=50), server_default="", nullable=False),
        sa.Column("quantity", tb.ExactDecimal(), nullable=False),
        sa.Column("average_price", tb.ExactDecimal(), nullable=False),
        sa.Column("current_price", tb.ExactDecimal(), nullable=True),
        sa.Column("pnl", tb.ExactDecimal(), nullable=True),
        sa.Column("pnl_percent", tb.ExactDecimal(), nullable=True),
        sa.Column("invested_value", tb.ExactDecimal(), nullable=True),
        sa.Column("current_value", tb.ExactDecimal(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_holdings_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holdings")),
        sa.UniqueConstraint("portfolio_id", "symbol", "exchange", name="unique_holding"),
        tb.ck(op.f("ck_holdings_average_price_positive"), "{num:average_price} > 0"),
        tb.ck(op.f("ck_holdings_quantity_nonnegative"), "{num:quantity} >= 0"),
    )
    with op.batch_alter_table("holdings", schema=None) as batch_op:
        batch_op.create_index("idx_holdings_account_id", ["portfolio_id"], unique=False)
        batch_op.create_index("idx_holdings_symbol", ["symbol"], unique=False)

    op.create_table(
        "portfolio_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("timestamp", tb.UTCDateTime(), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column("total_value_usd", tb.ExactDecimal(), nullable=False),
        sa.Column("cash_balance_usd", tb.ExactDecimal(), nullable=False),
        sa.Column("holdings", tb.JSONDoc(), nullable=False),
        sa.Column("pnl_24h", tb.ExactDecimal(), nullable=True),
        sa.Column("pnl_7d", tb.ExactDecimal(), nullable=True),
        sa.Column("pnl_30d", tb.ExactDecimal(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_portfolio_snapshots_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_portfolio_snapshots_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolio_snapshots")),
        sa.UniqueConstraint(
            "portfolio_id", "timestamp", name=op.f("uq_portfolio_snapshots_portfolio_id_timestamp")
        ),
    )
    with op.batch_alter_table("portfolio_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            "idx_portfolio_snapshots_portfolio_time", ["portfolio_id", "timestamp"], unique=False
        )
        batch_op.create_index(
            "idx_portfolio_user_daily", ["user_id", "snapshot_date"], unique=False
        )
        batch_op.create_index("idx_portfolio_user_time", ["user_id", "timestamp"], unique=False)

    op.create_table(
        "positions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("signal_id", sa.Integer(), nullable=True),
        sa.Column("deal_id", sa.String(length=100), nullable=True),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("exchange", sa.String(length=50), server_default="", nullable=False),
        sa.Column("product", sa.String(length=10), server_default="NRML", nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("quantity", tb.ExactDecimal(), nullable=False),
        sa.Column("entry_price", tb.ExactDecimal(), nullable=False),
        sa.Column("current_price", tb.ExactDecimal(), nullable=True),
        sa.Column("unrealized_pnl", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("unrealized_pnl_percent", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("realized_pnl", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("fees_paid", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("day_change", tb.ExactDecimal(), nullable=True),
        sa.Column("day_change_percent", tb.ExactDecimal(), nullable=True),
        sa.Column("status", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("open_slot", sa.Integer(), server_default="1", nullable=True),
        sa.Column("exit_price", tb.ExactDecimal(), nullable=True),
        sa.Column("opened_at", tb.UTCDateTime(), nullable=False),
        sa.Column("closed_at", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_positions_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["signal_id"],
            ["signals.id"],
            name=op.f("fk_positions_signal_id_signals"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint(
            "portfolio_id",
            "symbol",
            "exchange",
            "product",
            "direction",
            "open_slot",
            name="unique_position",
        ),
        tb.ck(op.f("ck_positions_entry_price_positive"), "{num:entry_price} > 0"),
        tb.ck(op.f("ck_positions_exit_price_positive"), "{num:exit_price} > 0"),
        tb.ck(op.f("ck_positions_fees_nonnegative"), "{num:fees_paid} >= 0"),
        tb.ck(
            op.f("ck_positions_open_slot_matches_status"),
            "(status = 'open' AND open_slot = 1) OR (status <> 'open' AND open_slot IS NULL)",
        ),
        tb.ck(op.f("ck_positions_quantity_nonnegative"), "{num:quantity} >= 0"),
        tb.ck_in(op.f("ck_positions_direction"), "direction", ["long", "short"]),
        tb.ck_in(op.f("ck_positions_product"), "product", ["MIS", "CNC", "NRML"]),
        tb.ck_in(op.f("ck_positions_status"), "status", ["open", "closed"]),
    )
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.create_index("idx_position_portfolio", ["portfolio_id"], unique=False)
        batch_op.create_index("idx_position_symbol", ["symbol"], unique=False)
        batch_op.create_index(
            "idx_positions_account_symbol", ["portfolio_id", "symbol"], unique=False
        )
        batch_op.create_index("idx_positions_deal_id", ["deal_id"], unique=True)
        batch_op.create_index("idx_positions_signal_id", ["signal_id"], unique=False)
        batch_op.create_index("idx_positions_status", ["status"], unique=False)
        batch_op.create_index("idx_positions_symbol", ["symbol", "status"], unique=False)
        batch_op.create_index("idx_positions_timestamp", ["opened_at"], unique=False)

    op.create_table(
        "strategy_deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("strategy_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=True),
        sa.Column("capital_allocated", tb.ExactDecimal(), nullable=True),
        sa.Column("max_positions", sa.Integer(), server_default="5", nullable=False),
        sa.Column("multiplier", tb.ExactDecimal(), server_default="1", nullable=False),
        sa.Column("status", sa.String(length=10), server_default="inactive", nullable=False),
        sa.Column("started_at", tb.UTCDateTime(), nullable=True),
        sa.Column("stopped_at", tb.UTCDateTime(), nullable=True),
        sa.Column("total_pnl", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_strategy_deployments_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_strategy_deployments_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_strategy_deployments_strategy_id_strategies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strategy_deployments")),
        sa.UniqueConstraint(
            "strategy_id", "account_id", name=op.f("uq_strategy_deployments_strategy_id_account_id")
        ),
        tb.ck(
            op.f("ck_strategy_deployments_capital_allocated_nonnegative"),
            "{num:capital_allocated} >= 0",
        ),
        tb.ck(op.f("ck_strategy_deployments_max_positions_positive"), "max_positions > 0"),
        tb.ck(op.f("ck_strategy_deployments_multiplier_positive"), "{num:multiplier} > 0"),
        tb.ck_in(
            op.f("ck_strategy_deployments_status"), "status", ["active", "paused", "inactive"]
        ),
    )
    with op.batch_alter_table("strategy_deployments", schema=None) as batch_op:
        batch_op.create_index("idx_strategy_deployments_account_id", ["account_id"], unique=False)
        batch_op.create_index("idx_strategy_deployments_portfolio", ["portfolio_id"], unique=False)
        batch_op.create_index("idx_strategy_deployments_status", ["status"], unique=False)
        batch_op.create_index("idx_strategy_deployments_strategy_id", ["strategy_id"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=True),
        sa.Column("strategy_id", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("signal_id", sa.Integer(), nullable=True),
        sa.Column("parent_order_id", sa.Integer(), nullable=True),
        sa.Column("exchange_order_id", sa.String(length=100), nullable=True),
        sa.Column("client_order_id", sa.String(length=100), nullable=True),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("exchange", sa.String(length=50), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("order_type", sa.String(length=20), nullable=False),
        sa.Column("product", sa.String(length=10), server_default="NRML", nullable=False),
        sa.Column("time_in_force", sa.String(length=3), server_default="GTC", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("quantity", tb.ExactDecimal(), nullable=False),
        sa.Column("filled_quantity", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("price", tb.ExactDecimal(), nullable=True),
        sa.Column("trigger_price", tb.ExactDecimal(), nullable=True),
        sa.Column("average_fill_price", tb.ExactDecimal(), nullable=True),
        sa.Column("disclosed_quantity", tb.ExactDecimal(), nullable=True),
        sa.Column("fee", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("fee_currency", sa.String(length=10), nullable=True),
        sa.Column("algo_params", tb.JSONDoc(), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("tag", sa.String(length=100), nullable=True),
        sa.Column("placed_at", tb.UTCDateTime(), nullable=True),
        sa.Column("filled_at", tb.UTCDateTime(), nullable=True),
        sa.Column("cancelled_at", tb.UTCDateTime(), nullable=True),
        sa.Column("expires_at", tb.UTCDateTime(), nullable=True),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_orders_account_id_trading_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["strategy_deployments.id"],
            name=op.f("fk_orders_deployment_id_strategy_deployments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_order_id"],
            ["orders.id"],
            name=op.f("fk_orders_parent_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_orders_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["signal_id"],
            ["signals.id"],
            name=op.f("fk_orders_signal_id_signals"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_orders_strategy_id_strategies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_orders_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        tb.ck(op.f("ck_orders_average_fill_price_positive"), "{num:average_fill_price} > 0"),
        tb.ck(op.f("ck_orders_disclosed_quantity_range"), "{num:disclosed_quantity} > 0"),
        tb.ck(op.f("ck_orders_fee_nonnegative"), "{num:fee} >= 0"),
        tb.ck(
            op.f("ck_orders_filled_quantity_range"),
            "{num:filled_quantity} >= 0 AND {num:filled_quantity} <= {num:quantity}",
        ),
        tb.ck(
            op.f("ck_orders_limit_orders_have_price"),
            "order_type NOT IN ('limit', 'stop_limit') OR price IS NOT NULL",
        ),
        tb.ck(op.f("ck_orders_price_positive"), "{num:price} > 0"),
        tb.ck(op.f("ck_orders_quantity_positive"), "{num:quantity} > 0"),
        tb.ck(
            op.f("ck_orders_stop_orders_have_trigger"),
            "order_type NOT IN ('stop_loss', 'stop_limit') OR trigger_price IS NOT NULL",
        ),
        tb.ck(op.f("ck_orders_trigger_price_positive"), "{num:trigger_price} > 0"),
        tb.ck_in(
            op.f("ck_orders_order_type"),
            "order_type",
            ["market", "limit", "stop_loss", "stop_limit", "twap", "vwap"],
        ),
        tb.ck_in(op.f("ck_orders_product"), "product", ["MIS", "CNC", "NRML"]),
        tb.ck_in(op.f("ck_orders_side"), "side", ["buy", "sell"]),
        tb.ck_in(
            op.f("ck_orders_status"),
            "status",
            ["pending", "open", "partially_filled", "filled", "cancelled", "rejected", "expired"],
        ),
        tb.ck_in(op.f("ck_orders_time_in_force"), "time_in_force", ["GTC", "DAY", "IOC"]),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("idx_order_created", ["created_at"], unique=False)
        batch_op.create_index("idx_order_portfolio", ["portfolio_id"], unique=False)
        batch_op.create_index("idx_order_status", ["status"], unique=False)
        batch_op.create_index("idx_order_symbol", ["symbol"], unique=False)
        batch_op.create_index("idx_order_user", ["user_id"], unique=False)
        batch_op.create_index("idx_orders_account_id", ["account_id"], unique=False)
        batch_op.create_index("idx_orders_account_status", ["account_id", "status"], unique=False)
        batch_op.create_index("idx_orders_client_id", ["client_order_id"], unique=True)
        batch_op.create_index("idx_orders_deployment", ["deployment_id"], unique=False)
        batch_op.create_index("idx_orders_exchange_id", ["exchange_order_id"], unique=True)
        batch_op.create_index("idx_orders_parent", ["parent_order_id"], unique=False)
        batch_op.create_index("idx_orders_placed_at", ["placed_at"], unique=False)
        batch_op.create_index("idx_orders_signal", ["signal_id"], unique=False)
        batch_op.create_index("idx_orders_strategy", ["strategy_id"], unique=False)
        batch_op.create_index("idx_orders_user_status", ["user_id", "status"], unique=False)

    op.create_table(
        "alerts",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("rule_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(length=10), server_default="info", nullable=False),
        sa.Column("category", sa.String(length=50), nullable=True),
        sa.Column("symbol", sa.String(length=50), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("strategy_id", sa.Integer(), nullable=True),
        sa.Column("is_read", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("is_sent", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_alerts_order_id_orders"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alerts_rule_id_alert_rules"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.id"],
            name=op.f("fk_alerts_strategy_id_strategies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_alerts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        tb.ck_in(
            op.f("ck_alerts_category"),
            "category",
            ["price", "trade", "system", "ml", "signal", "risk"],
            nullable=True,
        ),
        tb.ck_in(op.f("ck_alerts_severity"), "severity", ["info", "warning", "error", "critical"]),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("idx_alert_severity", ["severity"], unique=False)
        batch_op.create_index("idx_alert_user_created", ["user_id", "created_at"], unique=False)
        batch_op.create_index("idx_alerts_created", ["created_at"], unique=False)
        batch_op.create_index("idx_alerts_order", ["order_id"], unique=False)
        batch_op.create_index("idx_alerts_rule", ["rule_id"], unique=False)
        batch_op.create_index("idx_alerts_strategy", ["strategy_id"], unique=False)
        batch_op.create_index("idx_alerts_user_unread", ["user_id", "is_read"], unique=False)

    op.create_table(
        "failover_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("from_account_id", sa.Integer(), nullable=True),
        sa.Column("to_account_id", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("timestamp", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("success", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["from_account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_failover_events_from_account_id_trading_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_failover_events_order_id_orders"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["to_account_id"],
            ["trading_accounts.id"],
            name=op.f("fk_failover_events_to_account_id_trading_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_failover_events_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failover_events")),
    )
    with op.batch_alter_table("failover_events", schema=None) as batch_op:
        batch_op.create_index("idx_failover_events_from", ["from_account_id"], unique=False)
        batch_op.create_index("idx_failover_events_order", ["order_id"], unique=False)
        batch_op.create_index("idx_failover_events_timestamp", ["timestamp"], unique=False)
        batch_op.create_index("idx_failover_events_to", ["to_account_id"], unique=False)
        batch_op.create_index("idx_failover_events_user", ["user_id", "timestamp"], unique=False)

    op.create_table(
        "order_events",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=20), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("quantity", tb.ExactDecimal(), nullable=True),
        sa.Column("price", tb.ExactDecimal(), nullable=True),
        sa.Column("details", tb.JSONDoc(), nullable=True),
        sa.Column("occurred_at", tb.UTCDateTime(), nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_events_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
        tb.ck_in(
            op.f("ck_order_events_event_type"),
            "event_type",
            [
                "created",
                "submitted",
                "accepted",
                "triggered",
                "partially_filled",
                "filled",
                "amended",
                "cancelled",
                "rejected",
                "expired",
            ],
        ),
        tb.ck_in(
            op.f("ck_order_events_from_status"),
            "from_status",
            ["pending", "open", "partially_filled", "filled", "cancelled", "rejected", "expired"],
            nullable=True,
        ),
        tb.ck_in(
            op.f("ck_order_events_to_status"),
            "to_status",
            ["pending", "open", "partially_filled", "filled", "cancelled", "rejected", "expired"],
        ),
    )
    with op.batch_alter_table("order_events", schema=None) as batch_op:
        batch_op.create_index("idx_order_events_order", ["order_id", "occurred_at"], unique=False)

    op.create_table(
        "trades",
        sa.Column("id", tb.BigID(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("portfolio_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("position_id", sa.Integer(), nullable=True),
        sa.Column("exchange_trade_id", sa.String(length=100), nullable=True),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("exchange", sa.String(length=50), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("quantity", tb.ExactDecimal(), nullable=False),
        sa.Column("price", tb.ExactDecimal(), nullable=False),
        sa.Column("value", tb.ExactDecimal(), nullable=False),
        sa.Column("fee", tb.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("fee_currency", sa.String(length=10), nullable=True),
        sa.Column("pnl", tb.ExactDecimal(), nullable=True),
        sa.Column("pnl_percent", tb.ExactDecimal(), nullable=True),
        sa.Column("status", sa.String(length=10), server_default="filled", nullable=False),
        sa.Column("tx_hash", sa.String(length=100), nullable=True),
        sa.Column("metadata", tb.JSONDoc(), server_default=tb.json_default("{}"), nullable=False),
        sa.Column("executed_at", tb.UTCDateTime(), nullable=False),
        sa.Column("created_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.Column("updated_at", tb.UTCDateTime(), server_default=tb.utcnow_sql(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_trades_order_id_orders"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_trades_portfolio_id_portfolios"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["position_id"],
            ["positions.id"],
            name=op.f("fk_trades_position_id_positions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_trades_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trades")),
        tb.ck(op.f("ck_trades_fee_nonnegative"), "{num:fee} >= 0"),
        tb.ck(op.f("ck_trades_price_positive"), "{num:price} > 0"),
        tb.ck(op.f("ck_trades_quantity_positive"), "{num:quantity} > 0"),
        tb.ck(op.f("ck_trades_value_positive"), "{num:value} > 0"),
        tb.ck_in(op.f("ck_trades_side"), "side", ["buy", "sell"]),
        tb.ck_in(op.f("ck_trades_status"), "status", ["pending", "filled", "failed", "cancelled"]),
    )
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.create_index("idx_trade_executed", ["executed_at"], unique=False)
        batch_op.create_index("idx_trade_portfolio", ["portfolio_id"], unique=False)
        batch_op.create_index("idx_trade_symbol", ["symbol"], unique=False)
        batch_op.create_index("idx_trades_created", ["created_at"], unique=False)
        batch_op.create_index("idx_trades_exchange_id", ["exchange_trade_id"], unique=True)
        batch_op.create_index("idx_trades_order", ["order_id"], unique=False)
        batch_op.create_index(
            "idx_trades_portfolio_executed", ["portfolio_id", "executed_at"], unique=False
        )
        batch_op.create_index("idx_trades_position", ["position_id"], unique=False)
        batch_op.create_index("idx_trades_status", ["status"], unique=False)
        batch_op.create_index("idx_trades_symbol", ["symbol", "executed_at"], unique=False)
        batch_op.create_index("idx_trades_user_id", ["user_id"], unique=False)
        batch_op.create_index("idx_trades_user_recent", ["user_id", "created_at"], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key uses.
    op.drop_table("trades")
    op.drop_table("order_events")
    op.drop_table("failover_events")
    op.drop_table("alerts")
    op.drop_table("orders")
    op.drop_table("strategy_deployments")
    op.drop_table("positions")
    op.drop_table("portfolio_snapshots")
    op.drop_table("holdings")
    op.drop_table("websocket_connections")
    op.drop_table("webhook_deliveries")
    op.drop_table("signals")
    op.drop_table("portfolios")
    op.drop_table("messages")
    op.drop_table("llm_usage")
    op.drop_table("webhooks")
    op.drop_table("trading_sessions")
    op.drop_table("trading_accounts")
    op.drop_table("strategies")
    op.drop_table("ml_predictions")
    op.drop_table("market_holidays")
    op.drop_table("conversations")
    op.drop_table("audit_log")
    op.drop_table("api_keys")
    op.drop_table("alert_rules")
    op.drop_table("users")
    op.drop_table("trading_hours_templates")
    op.drop_table("system_metrics")
    op.drop_table("price_data")
    op.drop_table("orders_archive")
    op.drop_table("messages_archive")
    op.drop_table("bot_metrics")
    op.drop_table("audit_log_archive")
