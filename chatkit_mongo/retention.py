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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from .schema import utc_naive

Clock = Callable[[], datetime]
"""``() -> datetime``: now, naive UTC or aware."""

MAX_DEFAULT_REFRESH: Final = timedelta(days=1)
_DEFAULT_REFRESH_SHARE: Final = 10
"""By default a thread is re-stamped at most every tenth of the retention period, and at
least once a day: deletion then comes within 10% of the period, or a day, of its due date."""


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Retention:
    """How long threads live after their last activity, and how often they are re-stamped.

    A pure date policy: it computes dates and never touches a collection; the
    persistence object (:mod:`chatkit_mongo._persistence`) stamps the documents with them.
    """

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


def _check_duration(value: object, name: str) -> None:
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
    if value <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value}")
