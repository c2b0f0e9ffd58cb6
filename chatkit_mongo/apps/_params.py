"""Parameter types for numbers on the command line: every bad value is one short line.

Why not click's own: ``FloatRange`` lets ``inf`` and ``nan`` through (the driver's
millisecond conversion then ends in a traceback), and click repeats the whole value in
its message, a 5,000-character line for a 5,000-digit argument.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import click

from .._text import shown

MIN_SECONDS: Final = 0.001
"""The driver counts in whole milliseconds; less would mean "no wait at all"."""
MAX_SECONDS: Final = 3600.0
"""An hour: past it, waiting for a server (or between two words) is a mistake."""
_MAX_DIGITS: Final = 18
_WHOLE: Final = re.compile(r"^\s*\+?([0-9]+)\s*$")
r"""ASCII digits only: ``int()`` would also read Arabic-Indic or full-width digits."""


class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic in stubs only
    """A finite number of seconds in ``minimum..MAX_SECONDS``."""

    name = "seconds"

    def __init__(self, minimum: float = MIN_SECONDS) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            seconds = value
        else:
            try:
                seconds = float(str(value).strip())
            except ValueError:
                self.fail(f"{shown(value)} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or not self.minimum <= seconds <= MAX_SECONDS:
            self.fail(
                f"{shown(value)} is not between {self.minimum:g} and {MAX_SECONDS:g} seconds",
                param,
                ctx,
            )
        return seconds


class WholeNumber(click.ParamType):  # type: ignore[type-arg]  # generic in stubs only
    """A whole number in ``minimum..maximum``, written in ASCII digits."""

    name = "integer"

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            match = _WHOLE.match(str(value))
            if match is None or len(match[1].lstrip("0")) > _MAX_DIGITS:
                self.fail(
                    f"{shown(value)} is not a whole number from {self.minimum} to {self.maximum}",
                    param,
                    ctx,
                )
            number = int(match[1])
        if not self.minimum <= number <= self.maximum:
            self.fail(
                f"{shown(value)} is not a whole number from {self.minimum} to {self.maximum}",
                param,
                ctx,
            )
        return number
