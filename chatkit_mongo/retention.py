"""Retention: a thread and everything of it expire a fixed time after its last activity.

The policy, with ``N`` the retention period and ``R`` the refresh interval:

- Every document of a thread (the thread, its items, its attachments' metadata) carries
  one shared expiry date, :attr:`~chatkit_mongo.schema.Field.EXPIRES_AT`, so the
  server's TTL pass removes them at the same instant and reads hide them at the same
  instant: no half-deleted thread is ever visible.
- Activity (saving the thread, adding or saving an item, saving an attachment of the
  thread) pushes the expiry to ``now + N`` when it is earlier than ``now + N - R``.
  Why not on every write: moving the expiry re-stamps every document of the thread, a
  write per item; so a busy thread is re-stamped at most once per ``R``.
- Hence a thread is gone between ``N - R`` and ``N`` after its last activity.

The expiry is computed from the application's clock, not the server's: the server's
clock is out of reach of a plain query (``$$NOW`` needs ``$expr``, which the test
doubles ignore), and a few seconds of skew do not matter at a retention of days.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from . import queries
from ._driver import shielded
from .schema import Field, Role, utc_naive

Clock = Callable[[], datetime]
"""``() -> datetime``: now, naive UTC or aware."""

MAX_DEFAULT_REFRESH: Final = timedelta(days=1)
_DEFAULT_REFRESH_SHARE: Final = 10
"""By default a thread is re-stamped at most every tenth of the retention period, and at
least once a day: deletion then comes within 10% of the period, or a day, of its due date."""
_EXPIRY_ONLY: Final[dict[str, Any]] = {Field.EXPIRES_AT: 1, "_id": 0}
_THREAD_MEMBERS: Final[tuple[Role, ...]] = ("items", "attachments")


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Retention:
    """How long threads live after their last activity, and how often they are re-stamped."""

    period: timedelta
    refresh: timedelta
    clock: Clock = system_clock

    @classmethod
    def of(
        cls, period: timedelta | None, refresh: timedelta | None, clock: Clock | None
    ) -> Retention | None:
        """The policy for the store's options, checked; None when retention is off."""
        if period is None:
            if refresh is not None:
                raise ValueError("retention_refresh needs retention to be set")
            return None
        _check_duration(period, "retention")
        if refresh is None:
            refresh = min(MAX_DEFAULT_REFRESH, period / _DEFAULT_REFRESH_SHARE)
        _check_duration(refresh, "retention_refresh")
        if refresh >= period:
            raise ValueError(
                f"retention_refresh ({refresh}) must be shorter than retention ({period})"
            )
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        return cls(period, refresh, clock or system_clock)

    def now(self) -> datetime:
        """The clock's time as BSON stores it: naive UTC, whole milliseconds."""
        value = self.clock()
        if not isinstance(value, datetime):
            raise TypeError(f"clock returned {type(value).__name__}, not a datetime")
        value = utc_naive(value)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    def deadline(self, now: datetime) -> datetime:
        """The expiry of a thread active at ``now``."""
        return now + self.period

    def is_fresh(self, expiry: datetime, now: datetime) -> bool:
        """True while the thread needs no re-stamping after activity at ``now``."""
        return utc_naive(expiry) >= now + self.period - self.refresh

    async def thread_expiry(
        self, collections: Mapping[Role, Any], owner: str, thread_id: str, now: datetime
    ) -> datetime:
        """The expiry a document of the thread is written with, extended if due.

        One read when the thread's expiry is fresh. A thread that does not exist or has
        expired is left alone (touching it would bring it back): the document then
        expires on its own, ``N`` after ``now``, and is re-stamped if the thread is saved.
        """
        scope = queries.thread(owner, thread_id)
        thread = await collections["threads"].find_one(
            {**scope, **queries.alive(now)}, _EXPIRY_ONLY
        )
        if thread is None:
            return self.deadline(now)
        previous = thread.get(Field.EXPIRES_AT)
        if previous is not None and self.is_fresh(previous, now):
            return utc_naive(previous)
        return await self._extend(collections, scope, previous, now)

    async def save_thread(
        self,
        collections: Mapping[Role, Any],
        scope: dict[str, Any],
        fields: dict[str, Any],
        now: datetime,
    ) -> None:
        """Upsert the thread's fields and, if due, extend its expiry: one round trip
        when the expiry is fresh. A new thread adopts any of its documents written
        before it (ChatKit never does that, the Store API allows it)."""
        deadline = self.deadline(now)
        before = await shielded(
            collections["threads"].find_one_and_update(
                scope,
                {"$set": fields, "$setOnInsert": {Field.EXPIRES_AT: deadline}},
                projection=_EXPIRY_ONLY,
                upsert=True,
            )
        )
        if before is None:
            await shielded(self._restamp(collections, scope, deadline, now))
            return
        previous = before.get(Field.EXPIRES_AT)
        if previous is None or not self.is_fresh(previous, now):
            await self._extend(collections, scope, previous, now)

    async def _extend(
        self,
        collections: Mapping[Role, Any],
        scope: dict[str, Any],
        previous: datetime | None,
        now: datetime,
    ) -> datetime:
        """Move the thread's expiry from ``previous`` to ``now + N``, with its documents.

        Why the documents first, the thread last: should the process die in between,
        the thread keeps its earlier expiry, so it goes no later than its items, and the
        next activity finds it due and does the whole move again. Why the thread's move
        is conditional on ``previous``: of two writers refreshing at once, one moves it;
        the other reads the winner's date back instead of overwriting it.
        """
        deadline = self.deadline(now)

        async def restamp_then_move() -> bool:
            await self._restamp(collections, scope, deadline, now)
            moved = await collections["threads"].update_one(
                {**scope, Field.EXPIRES_AT: previous}, {"$set": {Field.EXPIRES_AT: deadline}}
            )
            return bool(moved.matched_count)

        if await shielded(restamp_then_move()):
            return deadline
        current = await collections["threads"].find_one(scope, _EXPIRY_ONLY)
        stored = None if current is None else current.get(Field.EXPIRES_AT)
        return deadline if stored is None else utc_naive(stored)

    async def _restamp(
        self,
        collections: Mapping[Role, Any],
        scope: dict[str, Any],
        deadline: datetime,
        now: datetime,
    ) -> None:
        """Give the thread's living items and attachments the new expiry.

        Why ``$max``: a concurrent refresh with a later date is never undone. Why only
        living documents: an expired item must not come back because its thread is saved
        again before the TTL pass has deleted it.
        """
        for role in _THREAD_MEMBERS:
            await collections[role].update_many(
                {**scope, **queries.alive(now)}, {"$max": {Field.EXPIRES_AT: deadline}}
            )


def _check_duration(value: object, name: str) -> None:
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
    if value <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value}")
