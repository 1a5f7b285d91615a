"""Streaming connections to live brokers (seed 003 ``websocket_connections``).

A live account whose broker is another Tradebase (``host_url`` ``http://host:port/openalgo``)
is followed over that server's live stream (``ws://host:port/api/v1/stream``, the account's
broker API key as the bearer; it needs ``read:events`` there): each ``order.*`` event the
broker sends makes this server ask the broker about the account's open orders at once
(``BrokerService.sync_open``), instead of at the next health check. The broker's REST
answer stays the truth; the stream only says when to ask.

Every connection is a row of ``websocket_connections``: a fresh ``connection_id``,
``status`` connected with ``connected_at``, ``messages_received`` and ``last_heartbeat``
moved by each message (the broker's heartbeats included), and ``disconnected`` with
``disconnected_at`` when it ends. A connection that fails or ends is opened again after
``TRADEBASE_BROKER_STREAM_RETRY_SECONDS``; a broker without a stream (a plain OpenAlgo
host answers the handshake with 404) is tried again at that pace too, quietly.

`BrokerStreams` runs in ``tradebase serve`` (``TRADEBASE_BROKER_STREAMS``, on by default):
one thread follows the list of active live accounts, one more per account streams.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import insert, select, update
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect

from tradebase.brokers.errors import BrokerNotConfigured
from tradebase.brokers.models import WebsocketConnection
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.core.time import utc_now
from tradebase.portfolios.models import ConnectionStatus, TradingAccount

log = logging.getLogger("tradebase.brokers")


def stream_url(host_url: str) -> str:
    """The live stream of the Tradebase whose OpenAlgo facade is *host_url*."""
    parts = urlsplit(host_url.rstrip("/"))
    path = parts.path.removesuffix("/openalgo")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, path + "/api/v1/stream", "", ""))


class BrokerStream:
    """The streaming connection of one account, opened again whenever it ends."""

    def __init__(self, engines: Engines, account_id: int, stop: threading.Event) -> None:
        self.engines = engines
        self.account_id = account_id
        self.stop = stop
        self.thread = threading.Thread(
            target=self._run, name=f"broker-stream-{account_id}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        retry = self.engines.settings.broker_stream_retry_seconds
        while not self.stop.is_set():
            try:
                self._follow()
            except (InvalidStatus, BrokerNotConfigured) as exc:
                log.debug("account %s: no broker stream: %s", self.account_id, exc)
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.info("account %s: broker stream ended: %s", self.account_id, exc)
            except Exception:  # a bug must not end the thread: log it and try again
                log.exception("account %s: broker stream failed", self.account_id)
            self.stop.wait(retry)

    def _follow(self) -> None:
        from tradebase.brokers.service import broker as broker_service

        main = self.engines.session_factory(Database.main)
        with unit_of_work(factory=main, write=False) as session:
            account = session.get(TradingAccount, self.account_id)
            if account is None or not account.is_active:
                return
            host = account.host_url or "http://127.0.0.1:5000"
        with broker_service.adapter(self.engines, account, "broker stream") as broker:
            apikey = broker.apikey
        timeout = self.engines.settings.broker_timeout_seconds
        with connect(
            stream_url(host),
            additional_headers={"Authorization": f"Bearer {apikey}"},
            open_timeout=timeout,
            close_timeout=timeout,
        ) as websocket:
            row_id = self._opened()
            try:
                while not self.stop.is_set():
                    try:
                        raw = websocket.recv(timeout=1.0)
                    except TimeoutError:
                        continue
                    self._received(row_id, raw)
            finally:
                self._closed(row_id)

    def _opened(self) -> int:
        now = utc_now()
        main = self.engines.session_factory(Database.main)
        with unit_of_work(factory=main) as session:
            return int(
                session.execute(
                    insert(WebsocketConnection)
                    .values(
                        account_id=self.account_id,
                        connection_id=f"{self.account_id}-{uuid.uuid4().hex}",
                        status=ConnectionStatus.connected,
                        connected_at=now,
                        last_heartbeat=now,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(WebsocketConnection.id)
                ).scalar_one()
            )

    def _received(self, row_id: int, raw: str | bytes) -> None:
        from tradebase.brokers.service import broker as broker_service

        now = utc_now()
        main = self.engines.session_factory(Database.main)
        with unit_of_work(factory=main) as session:
            session.execute(
                update(WebsocketConnection)
                .where(WebsocketConnection.id == row_id)
                .values(
                    messages_received=WebsocketConnection.messages_received + 1,
                    last_heartbeat=now,
                    updated_at=now,
                )
            )
        try:
            message: Any = json.loads(raw)
        except ValueError:
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if isinstance(kind, str) and kind.startswith("order."):
            broker_service.sync_open(self.engines, account_id=self.account_id)

    def _closed(self, row_id: int) -> None:
        now = utc_now()
        main = self.engines.session_factory(Database.main)
        with unit_of_work(factory=main) as session:
            session.execute(
                update(WebsocketConnection)
                .where(WebsocketConnection.id == row_id)
                .values(status=ConnectionStatus.disconnected, disconnected_at=now, updated_at=now)
            )


class BrokerStreams:
    """Keeps one `BrokerStream` per active live account, checking the list every
    ``TRADEBASE_BROKER_STREAM_RETRY_SECONDS``."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        self.stop = threading.Event()
        self.streams: dict[int, BrokerStream] = {}
        self.thread = threading.Thread(target=self._run, name="broker-streams", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for stream in self.streams.values():
            stream.thread.join(timeout=5)

    def _run(self) -> None:
        from tradebase.brokers.service import LIVE_BROKERS

        retry = self.engines.settings.broker_stream_retry_seconds
        while not self.stop.is_set():
            try:
                main = self.engines.session_factory(Database.main)
                with unit_of_work(factory=main, write=False) as session:
                    live = set(
                        session.scalars(
                            select(TradingAccount.id).where(
                                TradingAccount.is_active.is_(True),
                                TradingAccount.broker.in_(LIVE_BROKERS),
                            )
                        )
                    )
                for account_id in live - set(self.streams):
                    stream = self.streams[account_id] = BrokerStream(
                        self.engines, account_id, self.stop
                    )
                    stream.start()
            except Exception:  # e.g. not migrated yet: try again
                log.debug("broker streams: cannot list live accounts", exc_info=True)
            self.stop.wait(retry)
