"""A hand-moved clock, shared by the retention suite and its model-based test: expiry is
tested by moving time, not by waiting for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """A clock the test moves by hand; starts now, in whole milliseconds (BSON dates keep
    no more, so an expiry read back equals the one computed from ``now``)."""

    def __init__(self) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        self.now = now.replace(microsecond=now.microsecond // 1000 * 1000)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by
