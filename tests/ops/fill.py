"""An install holding realistic rows in every table of both databases.

Services write what they own (users, keys, sessions, accounts, portfolios, cash, orders
with their fills, positions and events, snapshots, the audit chain, credentials and their
access log); the rest is inserted directly. Values reach for the edges: decimals with 20
integer digits and 18 places, nested JSON with unicode, JSON's own null beside SQL NULL,
aware UTC timestamps with microseconds, binary ciphertexts.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal as D  # noqa: N817
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, insert, null, select
from sqlalchemy.orm import Session

from tests.conftest import Scratch
from tests.credentials import env_keys
from tradebase.accounts.service import api_key as api_key_service
from tradebase.accounts.service import user as user_service
from tradebase.accounts.service import web_session as web_session_service
from tradebase.alerts.models import Alert, AlertRule, Webhook, WebhookDelivery
from tradebase.audit.models import AuditLog
from tradebase.brokers.models import BrokerPostback, WebsocketConnection
from tradebase.calendars.models import MarketHoliday, TradingHoursTemplate
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.crypto import KeyStore, MasterKey
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.credentials.service import CredentialService
from tradebase.llm.models import Conversation, LlmUsage, Message, messages_archive
from tradebase.marketdata.models import PriceData
from tradebase.metrics.models import BotMetric, SystemMetric
from tradebase.orders.models import Order, order_events_archive, orders_archive
from tradebase.orders.service import order as order_service
from tradebase.portfolios.models import Holding
from tradebase.portfolios.service import account as account_service
from tradebase.portfolios.service import portfolio as portfolio_service
from tradebase.predictions.models import MlPrediction
from tradebase.schema import credentials_metadata, main_metadata
from tradebase.signals.models import Signal
from tradebase.strategies.models import FailoverEvent, Strategy, StrategyDeployment

# 20 integer digits and 18 places: the widest NUMERIC(38, 18) value, both signs.
WIDE = D("12345678901234567890.123456789012345678")
NEGATIVE_WIDE = D("-98765432109876543210.000000000000000001")
TINY = D("0.000000000000000001")
MOMENT = datetime(2026, 11, 22, 12, 4, 10, 777896, tzinfo=UTC)
NESTED: dict[str, Any] = {
    "grid": {"levels": [1, 2.5, -3, {"note": "naïve — ✓ 日本語 🚀"}], "empty": {}, "list": []},
    "flags": {"on": True, "off": False, "nothing": None},
    "große Zahl": "12345678901234567890.123456789012345678",
    'quote"and\\backslash': "line\nbreak\ttab",
}


SECRET = "pk_live_Ünïcødé-0123456789abcdef"


def fill_every_table(scratch: Scratch, tmp: Path) -> KeyStore:
    """Migrate *scratch*'s databases and put at least one row in every table; return the
    key store the secret is encrypted under."""
    settings = scratch.settings().model_copy(update={"data_dir": tmp})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    engines = Engines(settings)
    try:
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            _main(session, settings)
        keys = env_keys(tmp, MasterKey.generate())
        credentials = CredentialService(keys)
        with unit_of_work(factory=engines.session_factory(Database.credentials)) as session:
            credentials.set_secret(
                session,
                user_id=1,
                owner_type="account",
                owner_id=1,
                kind="broker_api_key",
                value=SECRET,
                actor="dana",
                actor_user_id=1,
            )
            credentials.read_secret(
                session,
                owner_type="account",
                owner_id=1,
                kind="broker_api_key",
                actor="orders",
                actor_user_id=1,
                purpose="place order",
            )
    finally:
        engines.dispose()
    return keys


def empty_tables(engines: Engines) -> list[str]:
    """Tables of either database without a row (the fill must leave none)."""
    empty = []
    for database, metadata in (
        (Database.main, main_metadata),
        (Database.credentials, credentials_metadata),
    ):
        with engines.engine(database).connect() as conn:
            for table in metadata.sorted_tables:
                if conn.execute(select(table).limit(1)).first() is None:
                    empty.append(table.name)
    return empty


def _main(session: Session, settings: Any) -> None:
    admin, _ = user_service.create(
        session, username="admin", email="admin@example.com", role="admin"
    )
    dana, _ = user_service.create(
        session, username="dana", email="Dana.Ünïcødé@example.com", password="correct horse battery"
    )
    dana.settings = NESTED
    dana.last_login = MOMENT
    who = Principal(user_id=dana.id, username=dana.username, role="trader")
    api_key_service.create(session, who, name="feeder ✓", scopes=["read:orders", "write:orders"])
    web_session_service.start(
        session, dana, settings=settings, ip_address="2001:db8::1", user_agent="Mozilla/5.0 ü"
    )
    session.execute(
        insert(main_metadata.tables["rate_limit_counters"]),
        [{"bucket": "key:1", "window_start": MOMENT.replace(second=0, microsecond=0), "count": 7}],
    )

    account = account_service.create(
        session, who, account_name="paper één", fee_rate=D("0.001"), slippage_bps=D("2.5")
    )
    backup = account_service.create(session, who, account_name="paper two", priority=200)
    portfolio = portfolio_service.create(session, who, account_id=account.id, name="main")
    portfolio_service.deposit(session, who, portfolio.id, D("100000.123456789012345678"))

    strategy = Strategy(
        user_id=dana.id,
        name="grid ✓",
        description="ünïcødé",
        strategy_type="grid_trading",
        config=NESTED,
        total_pnl=NEGATIVE_WIDE,
        win_rate=D("66.666666666666666667"),
        sharpe_ratio=D("1.234567890123456789"),
        last_signal_at=MOMENT,
    )
    session.add(strategy)
    session.flush()
    deployment = StrategyDeployment(
        strategy_id=strategy.id,
        account_id=account.id,
        portfolio_id=portfolio.id,
        capital_allocated=WIDE,
        multiplier=D("1.5"),
        status="active",
        started_at=MOMENT,
    )
    session.add(deployment)
    signal = Signal(
        user_id=dana.id,
        strategy_id=strategy.id,
        account_id=account.id,
        order_id="tv-0001",
        source="webhook",
        symbol="ACME",
        exchange="paper",
        direction="buy",
        quantity=D("2.000000000000000001"),
        price=D("100"),
        signal_data=NESTED,
        raw_payload='{"ticker": "ACME"}',
        timestamp=MOMENT,
        processed_at=MOMENT + timedelta(microseconds=1),
    )
    session.add(signal)
    session.flush()
    # JSON's own null beside SQL NULL: a copy must keep them apart.
    signals = main_metadata.tables["signals"]
    session.execute(
        insert(signals),
        [
            {
                "user_id": dana.id,
                "order_id": "json-null",
                "outcome": JSON.NULL,
                "received_at": MOMENT,
            },
        ],
    )
    session.execute(
        insert(signals),
        [{"user_id": dana.id, "order_id": "sql-null", "outcome": null(), "received_at": MOMENT}],
    )

    buy = order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D("10.5"),
        price=D("100.123456789"),
        signal_id=signal.id,
        strategy_id=strategy.id,
        client_order_id="c-1 ✓",
    )
    order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="sell",
        quantity=D("4"),
        price=D("111"),
    )
    order_service.place(
        session,
        who,
        portfolio_id=portfolio.id,
        symbol="ACME",
        side="buy",
        quantity=D("1"),
        order_type="limit",
        price=D("90.5"),
    )
    child = Order(
        user_id=dana.id,
        account_id=backup.id,
        portfolio_id=portfolio.id,
        parent_order_id=buy.id,
        deployment_id=deployment.id,
        symbol="ACME",
        exchange="paper",
        side="buy",
        order_type="market",
        quantity=D("1.000000000000000001"),
        status="cancelled",
        algo_params=NESTED,
        cancelled_at=MOMENT,
    )
    session.add(child)
    session.flush()
    portfolio_service.take_snapshot(session, who, portfolio.id)
    session.add(
        Holding(
            portfolio_id=portfolio.id,
            symbol="INFY",
            exchange="NSE",
            quantity=D("3"),
            average_price=D("1500.333333333333333333"),
            invested_value=D("4501"),
        )
    )

    session.add_all(
        [
            PriceData(
                symbol="ACME",
                exchange="paper",
                timeframe="1m",
                timestamp=MOMENT.replace(second=0, microsecond=0) - timedelta(minutes=i),
                open=WIDE - i,
                high=WIDE + 1,
                low=WIDE - 10,
                close=WIDE - TINY * (i + 1),
                volume=D("123.456789012345678901") if i else D(0),
                vwap=WIDE if i else None,
                num_trades=i,
            )
            for i in range(3)
        ]
    )
    session.add(
        MlPrediction(
            user_id=dana.id,
            model_name="lstm ✓",
            model_version="2.1",
            symbol="ACME",
            predicted_price=WIDE,
            predicted_direction="up",
            confidence=D("0.999999999999999999"),
            feature_importance={"rsi": 0.25, "vol": [1, 2, {"x": None}]},
            predicted_at=MOMENT,
            prediction_horizon=60,
            reference_price=D("100"),
            actual_price=D("101.5"),
            prediction_error=TINY,
            was_correct=True,
            evaluated_at=MOMENT + timedelta(hours=1),
        )
    )
    conversation = Conversation(user_id=dana.id, title="Märkte 📈", meta=NESTED)
    session.add(conversation)
    session.flush()
    message = Message(
        conversation_id=conversation.id,
        role="assistant",
        content="Kaufen? 🤔 — ünïcødé\nzweite Zeile",
        tokens_used=42,
        model="gpt-x",
        latency_ms=1234,
        meta={"tools": [{"name": "quote", "args": {"symbol": "ACME"}}]},
        created_at=MOMENT,
    )
    session.add(message)
    session.add(
        LlmUsage(
            provider="openai",
            model="gpt-x",
            input_tokens=1000,
            output_tokens=250,
            cost_usd=D("0.000123456789012345"),
            user_id=dana.id,
            conversation_id=conversation.id,
            request_type="chat",
            latency_ms=900,
            timestamp=MOMENT,
        )
    )
    session.add(
        BotMetric(
            bot_type="telegram",
            timestamp=MOMENT,
            messages_processed=10,
            commands_executed=3,
            errors_count=0,
            avg_response_time_ms=D("12.345678901234567890"),
            active_users=2,
        )
    )
    session.add(
        SystemMetric(
            timestamp=MOMENT,
            component="api",
            cpu_percent=D("99.999999999999999999"),
            memory_mb=WIDE,
            disk_percent=D("0"),
            active_connections=5,
            requests_per_second=D("1234.5"),
            error_rate=TINY,
        )
    )
    rule = AlertRule(
        user_id=dana.id,
        name="ACME ↑",
        type="price",
        symbol="ACME",
        condition=NESTED,
        severity="warning",
    )
    session.add(rule)
    session.flush()
    session.add(
        Alert(
            user_id=dana.id,
            rule_id=rule.id,
            title="ACME above 100 ✓",
            message="ünïcødé",
            severity="critical",
            category="price",
            symbol="ACME",
            order_id=buy.id,
            strategy_id=strategy.id,
            created_at=MOMENT,
        )
    )
    webhook = Webhook(
        user_id=dana.id, url="https://example.com/hook?ü=1", events=["order.filled", "alert ✓"]
    )
    session.add(webhook)
    session.flush()
    session.add(
        WebhookDelivery(
            webhook_id=webhook.id,
            event_id="evt-1",
            event_type="order.filled",
            payload=NESTED,
            status="failed",
            response_status=502,
            response_body="Bad Gateway ✗",
            next_attempt_at=MOMENT + timedelta(seconds=30),
            created_at=MOMENT,
        )
    )
    session.add(
        WebsocketConnection(
            account_id=account.id,
            connection_id="ws-1",
            status="connected",
            connected_at=MOMENT,
            last_heartbeat=MOMENT + timedelta(microseconds=999_999),
            messages_received=12345,
        )
    )
    session.add(
        FailoverEvent(
            user_id=dana.id,
            from_account_id=account.id,
            to_account_id=backup.id,
            order_id=child.id,
            reason="broker unreachable — 503",
            timestamp=MOMENT,
            success=False,
            error_message="timeout ✗",
        )
    )
    session.add(
        BrokerPostback(
            account_id=account.id,
            postback_id="pb-✓-1",
            order_id=child.id,
            sent_at=MOMENT,
            payload=NESTED,
            received_at=MOMENT + timedelta(microseconds=1),
        )
    )
    nse = session.scalars(
        select(TradingHoursTemplate).where(TradingHoursTemplate.exchange == "NSE")
    ).one()
    session.add(
        MarketHoliday(
            template_id=nse.id,
            date=date(2026, 12, 25),
            description="Weihnachten 🎄",
            holiday_type="special",
            session_open=time(10, 0),
            session_close=time(13, 30, 15),
        )
    )

    # Archived rows: copies of the shapes of their live tables.
    session.execute(
        insert(orders_archive),
        [
            {
                "id": 9001,
                "user_id": dana.id,
                "account_id": account.id,
                "portfolio_id": portfolio.id,
                "symbol": "OLD",
                "exchange": "paper",
                "side": "sell",
                "order_type": "limit",
                "product": "CNC",
                "time_in_force": "GTC",
                "status": "filled",
                "quantity": WIDE,
                "filled_quantity": WIDE,
                "price": TINY,
                "fee": D(0),
                "algo_params": NESTED,
                "placed_at": MOMENT - timedelta(days=400),
                "created_at": MOMENT - timedelta(days=400),
                "updated_at": MOMENT - timedelta(days=399),
                "archived_at": MOMENT,
            }
        ],
    )
    session.execute(
        insert(messages_archive),
        [
            {
                "id": 7001,
                "conversation_id": conversation.id,
                "role": "user",
                "content": "alt 👴",
                "created_at": MOMENT - timedelta(days=100),
                "metadata": {"archived": True},
                "archived_at": MOMENT,
            }
        ],
    )
    session.execute(
        insert(order_events_archive),
        [
            {
                "id": 9101,
                "order_id": 9001,
                "event_type": "filled",
                "from_status": "open",
                "to_status": "filled",
                "quantity": WIDE,
                "price": TINY,
                "details": NESTED,
                "occurred_at": MOMENT - timedelta(days=400),
                "created_at": MOMENT - timedelta(days=400),
                "archived_at": MOMENT,
            }
        ],
    )
    # A mirrored order with one placed leg (the buy) and one refused.
    from tradebase.mirroring.models import MirrorLeg, MirrorOrder

    mirrored = MirrorOrder(
        user_id=dana.id, client_order_id="mirror ✓", symbol="ACME", exchange="paper",
        side="buy", quantity=WIDE, order_type="limit", price=TINY, product="NRML",
        rule="custom", status="partial", legs_placed=1, legs_rejected=1, completed_at=MOMENT,
    )  # fmt: skip
    session.add(mirrored)
    session.flush()
    session.add_all([
        MirrorLeg(mirror_id=mirrored.id, leg=0, account_id=account.id,
                  portfolio_id=portfolio.id, quantity=WIDE, status="placed", order_id=buy.id),
        MirrorLeg(mirror_id=mirrored.id, leg=1, account_id=backup.id,
                  portfolio_id=portfolio.id, quantity=TINY, status="rejected",
                  error="not enough cash: ünïcødé"),
    ])  # fmt: skip
    session.flush()
    # A scheduled job's run (tradebase worker), with a JSON result.
    session.execute(
        insert(main_metadata.tables["job_runs"]),
        [
            {
                "job": "backup",
                "slot_at": MOMENT - timedelta(days=1),
                "kind": "schedule",
                "status": "succeeded",
                "attempt": 2,
                "host": "worker-1",
                "pid": 4242,
                "started_at": MOMENT - timedelta(days=1),
                "lease_until": MOMENT - timedelta(days=1) + timedelta(seconds=60),
                "finished_at": MOMENT - timedelta(days=1) + timedelta(seconds=3),
                "result": NESTED,
                "error": "attempt 1: worker worker-2 pid 17 stopped before the job finished",
            }
        ],
    )
    # One entry whose details and message are as unusual as the log allows.
    from tradebase.audit.service import audit

    audit.record(
        session,
        action="test.unicode",
        user_id=dana.id,
        actor="dana",
        resource_type="order",
        resource_id=buy.id,
        ip_address="203.0.113.9",
        user_agent="curl/8 ✓",
        details=NESTED,
        message="ünïcødé — 🚀",
    )
    # The two oldest audit entries archived as retention does (audit_log_archive and the
    # checkpoint the chain then verifies from).
    assert audit.archive(session, before=datetime.now(UTC) + timedelta(seconds=1), limit=2)
    assert session.scalar(select(AuditLog.id).limit(1)) is not None
    assert admin.id < dana.id
