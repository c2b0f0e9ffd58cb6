"""Argument checks that run before any value reaches a query.

Why: a query filter built from ``{"thread_id": thread_id}`` matches every thread when
``thread_id`` is ``{"$ne": None}``. Ids must be plain, non-empty strings of a sane size.
"""

from __future__ import annotations

from typing import Final, Literal

MAX_ID_LENGTH: Final = 512
Order = Literal["asc", "desc"]


def check_id(value: object, what: str) -> str:
    # Why this first test: ids are short ASCII strs, which it accepts at once (``isascii``
    # reads a flag the str keeps; ASCII cannot hold a lone surrogate); anything else
    # takes the full checks below and is refused, or accepted, by them alone.
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isascii():
        return value
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}: {value!r:.80}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; at most {MAX_ID_LENGTH}")
    return check_encodable(value, what)


def check_encodable(value: str, what: str) -> str:
    """Refuse a str that UTF-8 cannot encode (a lone surrogate such as ``"\\ud800"``).

    Why: BSON strings are UTF-8. The driver would fail with a bare ``UnicodeEncodeError``
    deep in the encoder (and the test doubles, which never encode, would accept it), so
    the caller would learn neither which argument was wrong nor that nothing was stored.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} is not valid Unicode text: it holds the lone surrogate "
            f"{value[exc.start]!r} at position {exc.start}, which UTF-8 cannot encode"
        ) from None
    return value


def check_optional_id(value: object, what: str) -> str | None:
    return None if value is None else check_id(value, what)


def check_positive_int(value: object, what: str) -> int:
    """``value`` if it is an int of at least 1 (a bool is not), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def check_limit(value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"limit must be an int, not {type(value).__name__}: {value!r:.80}")
    if not 1 <= value <= maximum:
        raise ValueError(f"limit must be between 1 and {maximum} (max_page_size), got {value}")
    return value


def check_order(value: object) -> Order:
    if value == "asc":
        return "asc"
    if value == "desc":
        return "desc"
    raise ValueError(f'order must be "asc" or "desc", got {value!r:.80}')
