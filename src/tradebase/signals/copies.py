"""Copies of a signal told in memory.

A server process knows the idempotency keys of the signals it is storing or stored
lately, so a copy that comes to the same process (a TradingView retry, an alert fired
twice, a burst of one alert) follows the first copy: it waits for it in memory, not in
the database, is stored by no INSERT that fails (on MariaDB concurrent ones can deadlock)
and, once the first is processed, is answered with no read at all.

The database's unique keys stay the rule: a copy of a signal that another process stored,
or that this one has forgotten (after `RECENT_SECONDS`, or beyond `RECENT_MAX` signals),
is told by its failed INSERT as before (signals/service.py: _repeat). Only a processed
outcome is answered from memory: a rejected or failed signal can be replayed
(``tradebase signals replay``), so a copy of one reads what it has become.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from tradebase.signals.models import Signal, SignalStatus

Key = tuple[int, str]  # (user id, one of a signal's two idempotency keys)
RECENT_MAX = 4096
RECENT_SECONDS = 300.0  # a copy comes within the idempotency window
# The outcomes kept for copies to be answered with: of the latest processed signals only
# (a burst's copies come within moments of the first; a later copy reads its answer).
# Every other signal is kept as its id alone: a tuple of numbers, which the garbage
# collector does not track — thousands of objects kept alive for minutes would make its
# full collections, which stop the server, longer and more frequent (bench/ab_signals.py:
# p99 165 to 187 ms with 4,096 flights and their outcomes kept, 86 to 103 ms before them).
ANSWERS_MAX = 64


@dataclass(eq=False)
class Flight:
    """One signal as this process stores and executes it, for its copies to follow."""

    keys: Sequence[Key] = ()
    signal_id: int | None = None  # once stored and committed
    done: Signal | None = None  # once executed here: final, committed, every column loaded
    landed: threading.Event = field(default_factory=threading.Event)  # no more to come

    def answer(self) -> Signal | None:
        """The outcome a copy is given from memory: a processed one only."""
        done = self.done
        return done if done is not None and done.status == SignalStatus.processed else None


class Copies:
    """The signals of one engine in this process, by idempotency key: a `Flight` while
    one is stored and executed (and for the latest processed ones), else its id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signals: OrderedDict[Key, tuple[float, Flight | int]] = OrderedDict()
        self._answering: deque[Flight] = deque()

    def join(self, keys: Sequence[Key]) -> tuple[Flight, bool]:
        """The flight of a signal with one of *keys* and False (the caller has a copy);
        else a new flight for the caller to store and execute, and True."""
        now = time.monotonic()
        with self._lock:
            for key in keys:
                found = self._signals.get(key)
                if found is not None and now - found[0] <= RECENT_SECONDS:
                    if isinstance(found[1], Flight):
                        return found[1], False
                    landed = Flight(keys, found[1])
                    landed.landed.set()
                    return landed, False
            flight = Flight(keys)
            for key in keys:
                self._signals[key] = (now, flight)
                self._signals.move_to_end(key)
            while self._signals:
                oldest = next(iter(self._signals.values()))[0]
                if len(self._signals) <= RECENT_MAX and now - oldest <= RECENT_SECONDS:
                    break
                self._signals.popitem(last=False)
            return flight, True

    def land(self, flight: Flight, done: Signal | None) -> None:
        """*flight*'s signal is stored (``signal_id``) and done with here; *done*: its
        outcome, when this process executed it and committed it."""
        with self._lock:
            if done is not None and done.status == SignalStatus.processed:
                flight.done = done
                self._answering.append(flight)
                if len(self._answering) > ANSWERS_MAX:
                    self._settle(self._answering.popleft())
            else:
                self._settle(flight)
        flight.landed.set()

    def _settle(self, flight: Flight) -> None:
        """Keep *flight*'s signal as its id (under the lock); its waiters keep the flight."""
        assert flight.signal_id is not None
        for key in flight.keys:
            found = self._signals.get(key)
            if found is not None and found[1] is flight:
                self._signals[key] = (found[0], flight.signal_id)

    def forget(self, flight: Flight) -> None:
        """*flight*'s signal was not stored by its caller (a copy of one another process
        stored, or an error): its copies, and its keys from now on, go to the database."""
        with self._lock:
            for key in flight.keys:
                found = self._signals.get(key)
                if found is not None and found[1] is flight:
                    del self._signals[key]
        flight.landed.set()


_COPIES: weakref.WeakKeyDictionary[Engine, Copies] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def copies_for(engine: Engine) -> Copies:
    """The flights of *engine*'s signals in this process."""
    found = _COPIES.get(engine)
    if found is None:
        with _LOCK:
            found = _COPIES.setdefault(engine, Copies())
    return found
