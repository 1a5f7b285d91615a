"""The migrated schema holds every table of DESIGN.md §1 and every seed column has a home.

Both lists below are written by hand: EXPECTED from DESIGN.md §1's table list with the
union of the seeds' columns, SEED_HOMES from the five seed documents, column by column.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from tests.conftest import Migrated

TS = "created_at updated_at"

EXPECTED: dict[str, str] = {
    # main database
    "users": f"id username email password_hash role is_active email_verified two_factor_enabled"
    f" settings webhook_key_hash last_login failed_login_count failed_login_window_start"
    f" locked_until password_changed_at totp_last_step {TS}",
    "api_keys": f"id user_id key_prefix key_hash name description scopes rate_limit_per_minute"
    f" is_active expires_at last_used_at total_requests {TS}",
    "trading_accounts": f"id user_id account_name broker host_url websocket_url is_primary"
    f" is_active is_paper priority mirror_multiplier last_connected connection_status fee_rate"
    f" slippage_bps {TS}",
    "portfolios": f"id user_id account_id name base_currency total_value_usd cash_balance_usd"
    f" total_pnl total_pnl_percent daily_pnl sharpe_ratio max_drawdown win_rate is_paper"
    f" is_active allow_margin position_mode periods_per_year {TS}",
    "signals": f"id user_id strategy_id account_id order_id order_id_shifted sender_order_id"
    f" source symbol exchange direction"
    f" quantity price order_type limit_price stop_price product status error position_status"
    f" trade_action trade_direction position_size hedging_enabled deal_id comment signal_data"
    f" raw_payload content_type source_ip outcome timestamp received_at processed_at {TS}",
    "orders": f"id user_id account_id portfolio_id strategy_id deployment_id signal_id"
    f" parent_order_id exchange_order_id client_order_id symbol exchange side order_type"
    f" product time_in_force status quantity filled_quantity price trigger_price"
    f" average_fill_price disclosed_quantity fee fee_currency algo_params reject_reason tag"
    f" placed_at filled_at cancelled_at expires_at triggered_at {TS}",
    "order_events": "id order_id event_type from_status to_status quantity price details"
    " occurred_at created_at",
    "trades": f"id user_id portfolio_id order_id position_id exchange_trade_id symbol exchange"
    f" side quantity price value fee fee_currency pnl pnl_percent status tx_hash metadata"
    f" executed_at {TS}",
    "positions": f"id portfolio_id signal_id deal_id symbol exchange product direction quantity"
    f" entry_price current_price unrealized_pnl unrealized_pnl_percent realized_pnl cost_basis"
    f" fees_paid"
    f" day_change day_change_percent status open_slot exit_price opened_at closed_at {TS}",
    "holdings": f"id portfolio_id symbol exchange quantity average_price current_price pnl"
    f" pnl_percent invested_value current_value {TS}",
    "portfolio_snapshots": "id portfolio_id user_id timestamp snapshot_date total_value_usd"
    " cash_balance_usd holdings pnl_24h pnl_7d pnl_30d created_at",
    "strategies": f"id user_id name description strategy_type config is_active is_backtest"
    f" total_pnl win_rate sharpe_ratio num_trades last_signal_at {TS}",
    "strategy_deployments": f"id strategy_id account_id portfolio_id capital_allocated"
    f" max_positions multiplier status started_at stopped_at total_pnl {TS}",
    "alert_rules": f"id user_id name type symbol condition severity is_active triggered_at"
    f" trigger_count {TS}",
    "alerts": "id user_id rule_id title message severity category symbol order_id strategy_id"
    " is_read is_sent created_at",
    "webhooks": f"id user_id url description events secret_last4 is_active last_called_at"
    f" failure_count disabled_at disabled_reason {TS}",
    "webhook_deliveries": "id webhook_id event_id event_type payload attempt status"
    " response_status response_body error duration_ms next_attempt_at created_at delivered_at"
    " attempted_at",
    "events": "id user_id event_type payload created_at dispatched_at",
    "price_data": "id symbol exchange timeframe timestamp open high low close volume vwap"
    " num_trades",
    "ml_predictions": "id user_id model_name model_version symbol exchange predicted_price"
    " predicted_direction confidence feature_importance predicted_at prediction_horizon"
    " reference_price actual_price prediction_error was_correct evaluated_at created_at",
    "conversations": f"id user_id title is_archived metadata {TS}",
    "messages": "id conversation_id role content created_at tokens_used model latency_ms metadata",
    "llm_usage": "id timestamp provider model input_tokens output_tokens cost_usd user_id"
    " conversation_id request_type latency_ms",
    "audit_log": "id timestamp user_id actor_user_id actor action resource_type resource_id"
    " ip_address"
    " user_agent details message prev_hash row_hash",
    "bot_metrics": "id bot_type timestamp messages_processed commands_executed errors_count"
    " avg_response_time_ms active_users",
    "system_metrics": "id timestamp component cpu_percent memory_mb disk_percent"
    " active_connections requests_per_second error_rate",
    "trading_hours_templates": f"id name exchange timezone description is_active {TS}",
    "trading_sessions": "id template_id day_of_week pre_market_start pre_market_end market_open"
    " market_close post_market_start post_market_end is_trading_day",
    "market_holidays": "id template_id date description holiday_type session_open session_close",
    "websocket_connections": f"id account_id connection_id status connected_at disconnected_at"
    f" messages_received last_heartbeat {TS}",
    "failover_events": "id user_id from_account_id to_account_id order_id reason timestamp"
    " success error_message",
    # brokers (issue 6): applied postbacks, the replay guard
    "broker_postbacks": "id account_id postback_id order_id sent_at payload received_at",
    # identity (issue 3)
    "rate_limit_counters": "id bucket window_start count",
    "web_sessions": "id user_id token_hash ip_address user_agent created_at last_seen_at"
    " expires_at revoked_at",
    "audit_chain_head": "id last_id last_hash entries updated_at",
    # operations (issue 7): where the audit chain resumes after archiving
    "audit_checkpoint": "id last_id last_hash entries updated_at",
    # trading engine (issue 4)
    "cash_movements": "id portfolio_id user_id kind amount balance_after trade_id note created_at",
    # mirroring (issue 5)
    "mirror_orders": "id user_id client_order_id symbol exchange side quantity order_type price"
    f" trigger_price product rule status legs_placed legs_rejected completed_at {TS}",
    "mirror_legs": f"id mirror_id leg account_id portfolio_id quantity status order_id error {TS}",
    # the worker (issue 7)
    "job_runs": "id job slot_at kind status attempt host pid started_at lease_until finished_at"
    " result error",
}
ARCHIVES = {"audit_log", "messages", "orders", "order_events"}
CREDENTIALS_EXPECTED: dict[str, str] = {
    "credentials": f"id user_id owner_type owner_id kind name ciphertext key_id last4"
    f" rotated_at {TS}",
    "credential_access_log": "id credential_id user_id actor action purpose success error"
    " ip_address accessed_at",
}

# Where each seed column lives now: "table.column" in the main database, or
# "credentials:table.column" in the credentials database.
SEED_HOMES: dict[str, dict[str, str]] = {
    "000 signals": {
        c: f"signals.{c}"
        for c in [
            "id",
            "order_id",
            "symbol",
            "direction",
            "quantity",
            "price",
            "status",
            "error",
            "position_status",
            "trade_action",
            "trade_direction",
            "position_size",
            "hedging_enabled",
            "deal_id",
            "signal_data",
            "timestamp",
        ]
    },
    "000 positions": {
        "id": "positions.id",
        "signal_id": "positions.signal_id",
        "deal_id": "positions.deal_id",
        "symbol": "positions.symbol",
        "direction": "positions.direction",
        "size": "positions.quantity",
        "entry_price": "positions.entry_price",
        "status": "positions.status",
        "exit_price": "positions.exit_price",
        "profit_loss": "positions.realized_pnl",
        "exit_timestamp": "positions.closed_at",
        "timestamp": "positions.opened_at",
    },
    "000 users": {
        "id": "users.id",
        "username": "users.username",
        "password_hash": "users.password_hash",
        "email": "users.email",
        "role": "users.role",
        "api_key": "api_keys.key_hash",
        "created_at": "users.created_at",
        "last_login": "users.last_login",
    },
    "000 user_api_keys": {
        "id": "credentials:credentials.id",
        "user_id": "credentials:credentials.user_id",
        "capital_key": "credentials:credentials.ciphertext",
        "capital_secret": "credentials:credentials.ciphertext",
        "capital_demo": "trading_accounts.is_paper",
        "webhook_key": "users.webhook_key_hash",
        "created_at": "credentials:credentials.created_at",
        "updated_at": "credentials:credentials.updated_at",
    },
    "000 api_tokens": {
        "id": "api_keys.id",
        "user_id": "api_keys.user_id",
        "token": "api_keys.key_hash",
        "description": "api_keys.description",
        "created_at": "api_keys.created_at",
        "expires_at": "api_keys.expires_at",
        "last_used": "api_keys.last_used_at",
    },
    "002 users": {
        "id": "users.id",
        "email": "users.email",
        "api_key": "api_keys.key_hash",
        "created_at": "users.created_at",
        "updated_at": "users.updated_at",
        "is_active": "users.is_active",
        "role": "users.role",
        "settings": "users.settings",
    },
    "002 conversations": {
        c: f"conversations.{c}"
        for c in ["id", "user_id", "title", "created_at", "updated_at", "is_archived", "metadata"]
    },
    "002 messages": {
        c: f"messages.{c}"
        for c in [
            "id",
            "conversation_id",
            "role",
            "content",
            "created_at",
            "tokens_used",
            "model",
            "latency_ms",
            "metadata",
        ]
    },
    "002 trades": {
        **{
            c: f"trades.{c}"
            for c in [
                "id",
                "user_id",
                "symbol",
                "side",
                "price",
                "fee",
                "status",
                "created_at",
                "executed_at",
                "tx_hash",
                "metadata",
            ]
        },
        "amount": "trades.quantity",
        "total_usd": "trades.value",
    },
    "002 portfolio_snapshots": {
        c: f"portfolio_snapshots.{c}"
        for c in [
            "id",
            "user_id",
            "timestamp",
            "total_value_usd",
            "holdings",
            "pnl_24h",
            "pnl_7d",
            "pnl_30d",
        ]
    },
    "002 alerts": {
        c: f"alert_rules.{c}"
        for c in [
            "id",
            "user_id",
            "type",
            "condition",
            "is_active",
            "created_at",
            "triggered_at",
            "trigger_count",
        ]
    },
    "002 llm_usage": {
        c: f"llm_usage.{c}"
        for c in [
            "id",
            "timestamp",
            "provider",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "user_id",
            "request_type",
            "latency_ms",
        ]
    },
    "002 audit_log": {
        **{
            c: f"audit_log.{c}"
            for c in [
                "id",
                "timestamp",
                "user_id",
                "action",
                "resource_type",
                "resource_id",
                "ip_address",
                "user_agent",
                "details",
            ]
        },
        "hash": "audit_log.row_hash",
    },
    "002 bot_metrics": {
        c: f"bot_metrics.{c}"
        for c in [
            "id",
            "bot_type",
            "timestamp",
            "messages_processed",
            "commands_executed",
            "errors_count",
            "avg_response_time_ms",
            "active_users",
        ]
    },
    "002 system_metrics": {
        c: f"system_metrics.{c}"
        for c in [
            "id",
            "timestamp",
            "component",
            "cpu_percent",
            "memory_mb",
            "disk_percent",
            "active_connections",
            "requests_per_second",
            "error_rate",
        ]
    },
    "002 api_keys": {
        c: f"api_keys.{c}"
        for c in [
            "id",
            "user_id",
            "key_hash",
            "name",
            "scopes",
            "created_at",
            "expires_at",
            "last_used_at",
            "is_active",
        ]
    },
    "002 webhooks": {
        **{
            c: f"webhooks.{c}"
            for c in [
                "id",
                "user_id",
                "url",
                "events",
                "is_active",
                "created_at",
                "last_called_at",
                "failure_count",
            ]
        },
        "secret_hash": "credentials:credentials.ciphertext",
    },
    "003 users": {
        **{
            c: f"users.{c}"
            for c in [
                "id",
                "username",
                "email",
                "password_hash",
                "is_active",
                "created_at",
                "updated_at",
                "last_login",
            ]
        },
        "is_admin": "users.role",
    },
    "003 trading_accounts": {
        **{
            c: f"trading_accounts.{c}"
            for c in [
                "id",
                "user_id",
                "account_name",
                "broker",
                "host_url",
                "websocket_url",
                "is_primary",
                "is_active",
                "last_connected",
                "connection_status",
                "created_at",
                "updated_at",
            ]
        },
        "api_key_encrypted": "credentials:credentials.ciphertext",
    },
    "003 orders": {
        **{
            c: f"orders.{c}"
            for c in [
                "id",
                "account_id",
                "symbol",
                "exchange",
                "quantity",
                "order_type",
                "price",
                "trigger_price",
                "product",
                "status",
                "filled_quantity",
                "placed_at",
            ]
        },
        "order_id": "orders.exchange_order_id",
        "action": "orders.side",
        "average_price": "orders.average_fill_price",
        "executed_at": "orders.filled_at",
    },
    "003 positions": {
        **{
            c: f"positions.{c}"
            for c in [
                "id",
                "symbol",
                "exchange",
                "quantity",
                "product",
                "current_price",
                "day_change",
                "day_change_percent",
                "updated_at",
            ]
        },
        "account_id": "portfolios.account_id",
        "average_price": "positions.entry_price",
        "pnl": "positions.unrealized_pnl",
        "pnl_percent": "positions.unrealized_pnl_percent",
    },
    "003 holdings": {
        **{
            c: f"holdings.{c}"
            for c in [
                "id",
                "symbol",
                "exchange",
                "quantity",
                "average_price",
                "current_price",
                "pnl",
                "pnl_percent",
                "invested_value",
                "current_value",
                "updated_at",
            ]
        },
        "account_id": "portfolios.account_id",
    },
    "003 activity_logs": {
        **{
            c: f"audit_log.{c}"
            for c in ["id", "user_id", "action", "ip_address", "user_agent", "timestamp"]
        },
        "details": "audit_log.message",
    },
    "003 strategies": {
        c: f"strategies.{c}"
        for c in [
            "id",
            "name",
            "description",
            "strategy_type",
            "is_active",
            "created_at",
            "updated_at",
        ]
    },
    "003 strategy_deployments": {
        c: f"strategy_deployments.{c}"
        for c in [
            "id",
            "strategy_id",
            "account_id",
            "capital_allocated",
            "max_positions",
            "status",
            "started_at",
            "stopped_at",
            "total_pnl",
        ]
    },
    "003 trading_hours_templates": {
        c: f"trading_hours_templates.{c}"
        for c in ["id", "name", "timezone", "is_active", "created_at"]
    },
    "003 trading_sessions": {
        c: f"trading_sessions.{c}"
        for c in [
            "id",
            "template_id",
            "day_of_week",
            "pre_market_start",
            "pre_market_end",
            "market_open",
            "market_close",
            "post_market_start",
            "post_market_end",
            "is_trading_day",
        ]
    },
    "003 market_holidays": {
        c: f"market_holidays.{c}"
        for c in ["id", "template_id", "date", "description", "holiday_type"]
    },
    "003 websocket_connections": {
        c: f"websocket_connections.{c}"
        for c in [
            "id",
            "account_id",
            "connection_id",
            "status",
            "connected_at",
            "disconnected_at",
            "messages_received",
            "last_heartbeat",
        ]
    },
    "003 failover_events": {
        c: f"failover_events.{c}"
        for c in [
            "id",
            "from_account_id",
            "to_account_id",
            "reason",
            "timestamp",
            "success",
            "error_message",
        ]
    },
    "003 orders_archive": {
        c: f"orders_archive.{c}"
        for c in ["id", "account_id", "symbol", "exchange", "quantity", "placed_at"]
    },
    "004 users": {
        **{
            c: f"users.{c}"
            for c in [
                "id",
                "username",
                "email",
                "password_hash",
                "role",
                "two_factor_enabled",
                "email_verified",
                "is_active",
                "created_at",
                "updated_at",
                "last_login",
            ]
        },
        "api_key": "credentials:credentials.ciphertext",
        "api_secret": "credentials:credentials.ciphertext",
    },
    "004 portfolios": {
        c: f"portfolios.{c}"
        for c in [
            "id",
            "user_id",
            "name",
            "total_value_usd",
            "cash_balance_usd",
            "total_pnl",
            "total_pnl_percent",
            "daily_pnl",
            "sharpe_ratio",
            "max_drawdown",
            "win_rate",
            "is_paper",
            "is_active",
            "created_at",
            "updated_at",
        ]
    },
    "004 positions": {
        c: f"positions.{c}"
        for c in [
            "id",
            "portfolio_id",
            "symbol",
            "exchange",
            "quantity",
            "entry_price",
            "current_price",
            "unrealized_pnl",
            "unrealized_pnl_percent",
            "opened_at",
            "updated_at",
        ]
    },
    "004 orders": {
        c: f"orders.{c}"
        for c in [
            "id",
            "user_id",
            "portfolio_id",
            "exchange_order_id",
            "client_order_id",
            "symbol",
            "exchange",
            "side",
            "order_type",
            "status",
            "quantity",
            "filled_quantity",
            "price",
            "average_fill_price",
            "fee",
            "fee_currency",
            "strategy_id",
            "created_at",
            "updated_at",
            "filled_at",
            "cancelled_at",
        ]
    },
    "004 trades": {
        c: f"trades.{c}"
        for c in [
            "id",
            "portfolio_id",
            "order_id",
            "exchange_trade_id",
            "symbol",
            "exchange",
            "side",
            "quantity",
            "price",
            "value",
            "fee",
            "fee_currency",
            "pnl",
            "pnl_percent",
            "executed_at",
        ]
    },
    "004 price_data": {
        c: f"price_data.{c}"
        for c in [
            "id",
            "symbol",
            "exchange",
            "timestamp",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "vwap",
            "num_trades",
        ]
    },
    "004 ml_predictions": {
        c: f"ml_predictions.{c}"
        for c in [
            "id",
            "model_name",
            "model_version",
            "symbol",
            "predicted_price",
            "predicted_direction",
            "confidence",
            "feature_importance",
            "predicted_at",
            "prediction_horizon",
            "actual_price",
            "prediction_error",
            "was_correct",
        ]
    },
    "004 strategies": {
        c: f"strategies.{c}"
        for c in [
            "id",
            "user_id",
            "name",
            "strategy_type",
            "description",
            "config",
            "is_active",
            "is_backtest",
            "total_pnl",
            "win_rate",
            "sharpe_ratio",
            "num_trades",
            "created_at",
            "updated_at",
            "last_signal_at",
        ]
    },
    "004 alerts": {
        c: f"alerts.{c}"
        for c in [
            "id",
            "user_id",
            "title",
            "message",
            "severity",
            "category",
            "symbol",
            "order_id",
            "strategy_id",
            "is_read",
            "is_sent",
            "created_at",
        ]
    },
    "004 api_keys": {
        **{
            c: f"api_keys.{c}"
            for c in [
                "id",
                "user_id",
                "key_hash",
                "name",
                "description",
                "rate_limit_per_minute",
                "is_active",
                "last_used_at",
                "total_requests",
                "created_at",
                "expires_at",
            ]
        },
        "key": "api_keys.key_prefix",
        "permissions": "api_keys.scopes",
    },
}


def _columns(engine: object) -> dict[str, set[str]]:
    inspector = inspect(engine)
    return {
        table: {c["name"] for c in inspector.get_columns(table)}
        for table in inspector.get_table_names()
        if not table.startswith("alembic_version")
    }


def test_main_database_has_every_table_with_its_columns(migrated: Migrated) -> None:
    live = _columns(migrated.main)
    expected = {table: set(cols.split()) for table, cols in EXPECTED.items()}
    for table in ARCHIVES:
        expected[f"{table}_archive"] = expected[table] | {"archived_at"}
    assert set(live) == set(expected)
    for table, columns in expected.items():
        assert live[table] == columns, table


def test_credentials_database_is_separate(migrated: Migrated) -> None:
    live = _columns(migrated.credentials)
    assert {t: c for t, c in live.items()} == {
        t: set(c.split()) for t, c in CREDENTIALS_EXPECTED.items()
    }
    assert not set(live) & set(EXPECTED)


def test_every_seed_column_has_a_home(migrated: Migrated) -> None:
    main, credentials = _columns(migrated.main), _columns(migrated.credentials)
    missing = []
    for seed_table, homes in SEED_HOMES.items():
        for column, home in homes.items():
            tables = credentials if home.startswith("credentials:") else main
            table, _, col = home.removeprefix("credentials:").partition(".")
            if col not in tables.get(table, set()):
                missing.append(f"{seed_table}.{column} -> {home}")
    assert missing == []


# Every index the seeds name: (table, name, columns). Seed 003 reuses generic names such as
# idx_account_id and idx_status on several tables; those are renamed idx_<table>_<column>.
SEED_INDEXES = [
    ("signals", "idx_signals_order_id", ["order_id"]),
    # Unique among a portfolio's open positions, deal_id leading (migration main_0011).
    ("positions", "idx_positions_deal_id", ["deal_id", "portfolio_id", "open_slot"]),
    ("signals", "idx_signals_timestamp", ["received_at"]),
    ("signals", "idx_signals_symbol", ["symbol"]),
    ("signals", "idx_signals_status", ["status"]),
    ("positions", "idx_positions_signal_id", ["signal_id"]),
    ("positions", "idx_positions_symbol", ["symbol", "status"]),
    ("positions", "idx_positions_status", ["status"]),
    ("positions", "idx_positions_timestamp", ["opened_at"]),
    ("users", "idx_users_email", ["email"]),
    ("users", "idx_users_username", ["username"]),
    ("conversations", "idx_conversations_user_id", ["user_id"]),
    ("conversations", "idx_conversations_updated", ["updated_at"]),
    ("conversations", "idx_conversations_user_recent", ["user_id", "is_archived", "updated_at"]),
    ("messages", "idx_messages_conversation", ["conversation_id"]),
    ("messages", "idx_messages_created", ["created_at"]),
    ("messages", "idx_messages_conversation_order", ["conversation_id", "created_at"]),
    ("trades", "idx_trades_user_id", ["user_id"]),
    ("trades", "idx_trades_symbol", ["symbol", "executed_at"]),
    ("trades", "idx_trades_created", ["created_at"]),
    ("trades", "idx_trades_status", ["status"]),
    ("trades", "idx_trades_user_recent", ["user_id", "created_at"]),
    ("trades", "idx_trade_portfolio", ["portfolio_id"]),
    ("trades", "idx_trade_symbol", ["symbol"]),
    ("trades", "idx_trade_executed", ["executed_at"]),
    ("trades", "idx_trades_exchange_id", ["exchange_trade_id"]),
    ("portfolio_snapshots", "idx_portfolio_user_time", ["user_id", "timestamp"]),
    ("portfolio_snapshots", "idx_portfolio_user_daily", ["user_id", "snapshot_date"]),
    ("alert_rules", "idx_alerts_user_active", ["user_id", "is_active"]),
    ("llm_usage", "idx_llm_usage_timestamp", ["timestamp"]),
    ("llm_usage", "idx_llm_usage_provider_model", ["provider", "model"]),
    ("llm_usage", "idx_llm_usage_user", ["user_id"]),
    ("llm_usage", "idx_llm_daily_provider", ["timestamp", "provider"]),
    ("audit_log", "idx_audit_timestamp", ["timestamp"]),
    ("audit_log", "idx_audit_user", ["user_id"]),
    ("audit_log", "idx_audit_action", ["action"]),
    ("audit_log", "idx_user_timestamp", ["user_id", "timestamp"]),
    ("audit_log", "idx_action_timestamp", ["action", "timestamp"]),
    ("audit_log", "idx_activity_user_action", ["user_id", "action"]),
    ("bot_metrics", "idx_bot_metrics_type_time", ["bot_type", "timestamp"]),
    ("system_metrics", "idx_system_metrics_component_time", ["component", "timestamp"]),
    ("system_metrics", "idx_metrics_hourly", ["timestamp", "component"]),
    ("api_keys", "idx_api_keys_hash", ["key_hash"]),
    ("api_keys", "idx_api_keys_user", ["user_id"]),
    ("webhooks", "idx_webhooks_user", ["user_id"]),
    ("webhooks", "idx_webhooks_active", ["is_active"]),
    ("trading_accounts", "idx_trading_accounts_user_id", ["user_id"]),
    ("trading_accounts", "idx_trading_accounts_is_primary", ["is_primary"]),
    ("trading_accounts", "idx_trading_accounts_is_active", ["is_active"]),
    ("trading_accounts", "idx_accounts_user_primary", ["user_id", "is_primary"]),
    ("orders", "idx_orders_account_id", ["account_id"]),
    ("orders", "idx_orders_exchange_id", ["exchange_order_id"]),  # 003 idx_order_id
    ("orders", "idx_orders_placed_at", ["placed_at"]),
    ("orders", "idx_orders_account_status", ["account_id", "status"]),
    ("orders", "idx_order_user", ["user_id"]),
    ("orders", "idx_order_portfolio", ["portfolio_id"]),
    ("orders", "idx_order_symbol", ["symbol"]),
    ("orders", "idx_order_status", ["status"]),
    ("orders", "idx_order_created", ["created_at"]),
    ("orders", "idx_orders_client_id", ["client_order_id"]),
    ("positions", "idx_position_portfolio", ["portfolio_id"]),
    ("positions", "idx_position_symbol", ["symbol"]),
    ("positions", "idx_positions_account_symbol", ["portfolio_id", "symbol"]),
    ("holdings", "idx_holdings_account_id", ["portfolio_id"]),
    ("holdings", "idx_holdings_symbol", ["symbol"]),
    ("strategy_deployments", "idx_strategy_deployments_strategy_id", ["strategy_id"]),
    ("strategy_deployments", "idx_strategy_deployments_account_id", ["account_id"]),
    ("strategy_deployments", "idx_strategy_deployments_status", ["status"]),
    ("trading_sessions", "idx_trading_sessions_template_id", ["template_id"]),
    ("trading_sessions", "idx_trading_sessions_day_of_week", ["day_of_week"]),
    ("market_holidays", "idx_market_holidays_template_id", ["template_id"]),
    ("market_holidays", "idx_market_holidays_date", ["date"]),
    ("websocket_connections", "idx_websocket_connections_account_id", ["account_id"]),
    ("websocket_connections", "idx_websocket_connections_status", ["status"]),
    ("failover_events", "idx_failover_events_timestamp", ["timestamp"]),
    ("portfolios", "idx_portfolio_user", ["user_id"]),
    ("strategies", "idx_strategy_user", ["user_id"]),
    ("strategies", "idx_strategy_type", ["strategy_type"]),
    ("alerts", "idx_alert_user_created", ["user_id", "created_at"]),
    ("alerts", "idx_alert_severity", ["severity"]),
    ("price_data", "idx_price_symbol_time", ["symbol", "timestamp"]),
    ("price_data", "idx_price_exchange_time", ["exchange", "timestamp"]),
    ("ml_predictions", "idx_prediction_symbol_time", ["symbol", "predicted_at"]),
    ("ml_predictions", "idx_prediction_model", ["model_name"]),
]
UNIQUE_KEYS = [
    ("orders", ["client_order_id"]),
    ("orders", ["exchange_order_id"]),
    ("trades", ["exchange_trade_id"]),
    ("signals", ["user_id", "order_id"]),
    ("users", ["username"]),
    ("users", ["email"]),
    ("trading_accounts", ["user_id", "account_name"]),
    ("positions", ["portfolio_id", "symbol", "exchange", "product", "direction", "open_slot"]),
    ("holdings", ["portfolio_id", "symbol", "exchange"]),
    ("price_data", ["symbol", "exchange", "timeframe", "timestamp"]),
    ("api_keys", ["key_hash"]),
]


def test_every_seed_index_exists(migrated: Migrated) -> None:
    inspector = inspect(migrated.main)
    indexes = {
        table: {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table)}
        for table in {t for t, _, _ in SEED_INDEXES}
    }
    missing = [
        (table, name, cols)
        for table, name, cols in SEED_INDEXES
        if indexes[table].get(name) != cols
    ]
    assert missing == []


@pytest.mark.parametrize(("table", "columns"), UNIQUE_KEYS)
def test_unique_keys(migrated: Migrated, table: str, columns: list[str]) -> None:
    inspector = inspect(migrated.main)
    uniques = [ix["column_names"] for ix in inspector.get_indexes(table) if ix["unique"]]
    uniques += [uq["column_names"] for uq in inspector.get_unique_constraints(table)]
    assert columns in uniques


def test_every_foreign_key_is_indexed(migrated: Migrated) -> None:
    # Cascading deletes and joins need an index on the child side (PostgreSQL makes none).
    inspector = inspect(migrated.main)
    unindexed = []
    for table in inspector.get_table_names():
        leading = {tuple(ix["column_names"][:1]) for ix in inspector.get_indexes(table)}
        leading |= {tuple(uq["column_names"][:1]) for uq in inspector.get_unique_constraints(table)}
        for fk in inspector.get_foreign_keys(table):
            if tuple(fk["constrained_columns"][:1]) not in leading:
                unindexed.append(f"{table}.{fk['constrained_columns']}")
    assert unindexed == []


def test_foreign_keys_carry_the_seeds_delete_rules(migrated: Migrated) -> None:
    inspector = inspect(migrated.main)
    rules = {
        (table, fk["constrained_columns"][0]): (fk.get("options") or {}).get("ondelete")
        for table in inspector.get_table_names()
        for fk in inspector.get_foreign_keys(table)
    }
    assert rules[("trading_accounts", "user_id")] == "CASCADE"
    assert rules[("orders", "account_id")] == "CASCADE"
    assert rules[("positions", "portfolio_id")] == "CASCADE"
    assert rules[("strategy_deployments", "strategy_id")] == "CASCADE"
    assert rules[("trading_sessions", "template_id")] == "CASCADE"
    assert rules[("audit_log", "user_id")] == "SET NULL"
    assert rules[("failover_events", "from_account_id")] == "SET NULL"
    assert rules[("positions", "signal_id")] == "SET NULL"
    assert rules[("llm_usage", "user_id")] == "SET NULL"
