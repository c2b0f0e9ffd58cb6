"""The sort key is stored data: its exact form must never change, and its byte order must
be time order (then id order), for every datetime ChatKit can stamp."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from chatkit_mongo.schema import sort_key, sort_key_id

_ID = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)


def test_its_exact_form_is_microseconds_since_year_one_in_eighteen_digits_then_the_id() -> None:
    assert sort_key(datetime(1, 1, 1), "a") == "000000000000000000 a"
    assert sort_key(datetime(1, 1, 1, 0, 0, 1, 5), "a") == "000000000001000005 a"
    assert sort_key(datetime(9999, 12, 31, 23, 59, 59, 999999), "msg_1") == (
        "315537897599999999 msg_1"
    )
    assert sort_key(datetime(2026, 12, 4, 14, 0), "t") == "063931989600000000 t"


def test_an_aware_datetime_counts_as_the_same_instant_in_utc() -> None:
    naive = datetime(2026, 12, 4, 9, 30, 0, 123)
    aware = (naive.replace(tzinfo=UTC)).astimezone(timezone(timedelta(hours=-5, minutes=-30)))
    assert sort_key(aware, "x") == sort_key(naive, "x")


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    _ID,
    _ID,
)
def test_byte_order_is_time_order_then_id_order(
    first: datetime, second: datetime, first_id: str, second_id: str
) -> None:
    a, b = sort_key(first, first_id), sort_key(second, second_id)
    assert sort_key_id(a) == first_id
    assert (a.encode() < b.encode()) == ((first, first_id) < (second, second_id))
