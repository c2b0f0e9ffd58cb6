"""Hostile id values shared by the Store and attachment hostile-input suites.

One list each, so both suites refuse and accept exactly the same values.
"""

from __future__ import annotations

from typing import Any, Final

from chatkit_mongo.schema import MAX_ID_LENGTH

INJECTIONS: Final[list[Any]] = [
    {"$ne": None},
    {"$gt": ""},
    {"$regex": ".*"},
    {"$where": "true"},
    ["thr_1"],
    42,
    b"thr_1",
]
"""Values that, used as a filter value, would match more than one document."""

BAD_ID_STRINGS: Final[dict[str, str]] = {
    "": "must not be empty",
    "x" * (MAX_ID_LENGTH + 1): f"at most {MAX_ID_LENGTH}",
    "thr_\ud800": "lone surrogate",
}

ODD_BUT_VALID_IDS: Final[list[str]] = [
    "../../etc/passwd",
    "a.b",
    "$where",
    " ",
    "nul\x00inside",
    "ünï©ødé 🦊 你好",
    "x" * MAX_ID_LENGTH,
    "/thr_1",
    "thr_1 ",
]
