"""Several dispatchers on one database: each event fans out once and each attempt is sent
by one of them (compare-and-set claims), on every engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.alerts.receiver import Receiver, verify
from tests.conftest import Scratch
from tests.factories import create_user
from tradebase.alerts.delivery import Dispatcher, backoff
from tradebase.alerts.errors import WebhookUrlInvalid
from tradebase.alerts.service import check_url
from tradebase.alerts.service import webhook as webhook_service
from tradebase.config import Settings, get_settings
from tradebase.core import migrate
from tradebase.core.auth import Principal
from tradebase.core.db import Database, Engines, unit_of_work
from tradebase.events.service import emit


def test_two_dispatchers_send_each_event_once(scratch: Scratch) -> None:
    settings = scratch.settings().model_copy(update={"webhook_concurrency": 4})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    receiver = Receiver()
    engines = [Engines(settings), Engines(settings)]
    main = engines[0].session_factory(Database.main)
    try:
        with (
            unit_of_work(factory=main) as session,
            unit_of_work(factory=engines[0].session_factory(Database.credentials)) as creds,
        ):
            user = create_user(session)
            who = Principal(user_id=user.id, username=user.username, role="trader")
            _, secret = webhook_service.create(
                session, creds, who, url=receiver.url, events=["failover"], settings=settings
            )
        with unit_of_work(factory=main) as session:
            for n in range(30):
                emit(session, who.user_id, "failover", {"n": n})
            emit(session, who.user_id, "order.filled", {"not": "subscribed"})
        dispatchers = [Dispatcher(e, settings) for e in engines]
        start = threading.Barrier(2)

        def run(dispatcher: Dispatcher) -> None:
            start.wait()
            for _ in range(5):
                dispatcher.tick()

        threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        got = receiver.wait(30)
        for dispatcher in dispatchers:
            dispatcher.stop()  # waits for the requests in flight
        got = list(receiver.requests)
        assert secret is not None and all(verify(secret, r) for r in got)
        ids = Counter(json.loads(r.body)["id"] for r in got)
        assert len(ids) == 30 and set(ids.values()) == {1}, ids
        assert sorted(json.loads(r.body)["data"]["n"] for r in got) == list(range(30))
    finally:
        receiver.close()
        for e in engines:
            e.dispose()


def test_the_back_off_doubles_up_to_its_cap() -> None:
    settings = Settings(webhook_retry_base_seconds=10, webhook_retry_max_seconds=3600)
    assert [backoff(n, settings) for n in range(1, 11)] == [
        10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600,
    ]  # fmt: skip


def test_private_addresses_are_refused_when_the_server_says_so() -> None:
    closed = Settings(webhook_allow_private=False)
    for url in ("http://127.0.0.1:8080/hook", "https://10.1.2.3/x", "http://[::1]/x"):
        with pytest.raises(WebhookUrlInvalid, match="private address"):
            check_url(url, closed)
    assert check_url("http://127.0.0.1:8080/hook", Settings()) == "http://127.0.0.1:8080/hook"
    with pytest.raises(WebhookUrlInvalid, match="no host"):
        check_url("http:///nohost", Settings())


@pytest.mark.slow
def test_the_worker_process_sends_webhooks_too(
    scratch: Scratch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # this process writes the signing secret under the master key the worker reads it with
    monkeypatch.setenv("TRADEBASE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    settings = scratch.settings().model_copy(update={"data_dir": tmp_path})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    engines = Engines(settings)
    receiver = Receiver()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBASE_")}
    env |= {
        **scratch.env(),
        "TRADEBASE_DATA_DIR": str(tmp_path),
        "TRADEBASE_WEBHOOK_POLL_SECONDS": "0.1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "tradebase", "worker", "--job", "recover"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker.log").open("ab"),
    )
    try:
        with (
            unit_of_work(factory=engines.session_factory(Database.main)) as session,
            unit_of_work(factory=engines.session_factory(Database.credentials)) as creds,
        ):
            user = create_user(session)
            who = Principal(user_id=user.id, username=user.username, role="trader")
            _, secret = webhook_service.create(
                session, creds, who, url=receiver.url, events=["failover"], settings=settings
            )
        with unit_of_work(factory=engines.session_factory(Database.main)) as session:
            emit(session, who.user_id, "failover", {"from": "a", "to": "b"})
        [request] = receiver.wait(1, timeout=30)
        assert secret is not None and verify(secret, request)
        assert json.loads(request.body)["data"] == {"from": "a", "to": "b"}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        receiver.close()
        engines.dispose()
        monkeypatch.undo()
        get_settings.cache_clear()


def test_events_nobody_subscribes_to_are_marked_in_one_round_and_subscribers_keep_theirs(
    scratch: Scratch,
) -> None:
    # With no active webhook anywhere the dispatcher marks the events dispatched in one
    # statement a poll interval; an event of a user who has a webhook by then (created
    # between its look and its mark) is left to the fan-out, which delivers it.
    settings = scratch.settings().model_copy(update={"webhook_poll_seconds": 60.0})
    for database in Database:
        migrate.upgrade(database, "head", settings=settings)
    receiver = Receiver()
    engines = Engines(settings)
    main = engines.session_factory(Database.main)

    def undispatched() -> list[int]:
        with unit_of_work(factory=main, write=False) as session:
            rows = session.execute(
                text("SELECT payload FROM events WHERE dispatched_at IS NULL ORDER BY id")
            ).scalars()
            return [(json.loads(p) if isinstance(p, str) else p)["n"] for p in rows]

    try:
        with unit_of_work(factory=main) as session:
            a, b = create_user(session), create_user(session)
            for n in range(3):
                emit(session, b.id, "failover", {"n": n})
        dispatcher = Dispatcher(engines, settings)
        dispatcher.tick()  # nobody subscribes: the three are marked, nothing delivered
        assert undispatched() == []
        with (
            unit_of_work(factory=main) as session,
            unit_of_work(factory=engines.session_factory(Database.credentials)) as creds,
        ):
            who = Principal(user_id=a.id, username=a.username, role="trader")
            webhook_service.create(
                session, creds, who, url=receiver.url, events=["failover"], settings=settings
            )
            emit(session, a.id, "failover", {"n": 10})
            emit(session, b.id, "failover", {"n": 20})
        dispatcher._mark_unsubscribed()  # within the poll interval of the last: nothing
        assert undispatched() == [10, 20]
        dispatcher._unsubscribed_marked_at = -float("inf")
        dispatcher._mark_unsubscribed()  # as if A's webhook came after the look
        assert undispatched() == [10]
        dispatcher.tick()
        assert len(receiver.wait(1, timeout=30)) == 1
        dispatcher.stop()
        assert [json.loads(r.body)["data"]["n"] for r in receiver.requests] == [10]
        assert undispatched() == []
        with unit_of_work(factory=main, write=False) as session:
            assert session.scalar(text("SELECT COUNT(*) FROM webhook_deliveries")) == 1
    finally:
        receiver.close()
        engines.dispose()
