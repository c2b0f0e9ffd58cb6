"""The write-time document check takes its fast path only where it is provably exact.

``check_document`` skips the nesting and DBRef walk for a small document with no
``$ref`` string element; these properties hold it to the full check: for every
generated document (model dumps, hostile metadata, BSON-special objects, nesting around
MongoDB's limit, values the encoder refuses) it refuses exactly when, and for the reason,
a reference that always walks and always encodes refuses.
"""

from __future__ import annotations

import re
from typing import Any

import bson
import pytest
from bson.errors import InvalidDocument
from hypothesis import given
from hypothesis import strategies as st

from chatkit_mongo import UnstorableError
from chatkit_mongo._codec import MAX_DOCUMENT_BYTES, MAX_NESTING, check_document, is_dbref_shaped

from .strategies import attachments, items, json_values, metadata, special_metadata, threads

_REASONS = {
    "nested": r"is nested \d+ levels deep",
    "dbref": r"an object with the keys",
    "int64": r"holds an integer outside MongoDB's 64-bit range",
    "invalid": r"cannot be encoded as BSON",
    "surrogate": r"holds a string with a lone surrogate",
    "size": r"is \d+ bytes as BSON",
}


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(child) for child in value), default=0)
    return 0


def _has_dbref(value: Any, top: bool = True) -> bool:
    if isinstance(value, dict):
        if not top and is_dbref_shaped(value):
            return True
        return any(_has_dbref(child, False) for child in value.values())
    if isinstance(value, list):
        return any(_has_dbref(child, False) for child in value)
    return False


def _reference(document: dict[str, Any]) -> str | None:
    """Why the full check refuses ``document`` (walk first, then encode), or None."""
    if _depth(document) > MAX_NESTING:
        return "nested"
    if _has_dbref(document):
        return "dbref"
    try:
        size = len(bson.encode(document))
    except OverflowError:
        return "int64"
    except InvalidDocument:
        return "invalid"
    except UnicodeEncodeError:
        return "surrogate"
    return "size" if size > MAX_DOCUMENT_BYTES - 1024 else None


def _assert_same_verdict(document: dict[str, Any]) -> None:
    reason = _reference(document)
    if reason is None:
        check_document(document, "doc d")
        return
    with pytest.raises(UnstorableError, match=r"^doc d .*" + _REASONS[reason]):
        check_document(document, "doc d")


def _chain(depth: int, key: str, as_list: bool) -> Any:
    value: Any = [] if as_list else {}
    for _ in range(depth - 1):
        value = [value] if as_list else {key: value}
    return value


refused_values = st.one_of(
    st.sampled_from([2**63, -(2**63) - 1, 2**70, "\ud800", "a\udfffb"]),
    st.builds(lambda key: {key: 1}, st.sampled_from(["a\x00b", "\x00"])),
    st.just({1: "non-str key"}),
    st.builds(lambda n: "x" * n, st.sampled_from([600, 680, 700, 720])),
)

nestings = st.builds(
    _chain, st.integers(MAX_NESTING - 3, MAX_NESTING + 3), st.sampled_from(["", "n"]), st.booleans()
)

documents = st.dictionaries(
    st.sampled_from(["owner", "thread_id", "data", "x"]),
    st.one_of(json_values, metadata, special_metadata, refused_values, nestings),
    max_size=4,
)


@given(documents)
def test_check_refuses_exactly_what_the_full_walk_and_encode_refuse(
    document: dict[str, Any],
) -> None:
    _assert_same_verdict(document)


@given(st.one_of(threads(), items(), attachments()), st.one_of(json_values, refused_values))
def test_model_documents_with_any_extra_value_get_the_full_checks_verdict(
    model: Any, extra: Any
) -> None:
    document = {"owner": "o", "data": model.model_dump(mode="json")}
    _assert_same_verdict(document)
    _assert_same_verdict({**document, "extra": extra})


@pytest.mark.parametrize("as_list", [False, True])
def test_the_smallest_document_nested_past_the_limit_is_still_walked(as_list: bool) -> None:
    """The fast path's premise: nothing nested past the limit is short enough to skip."""
    document = _chain(MAX_NESTING + 1, "", as_list)
    wrapped = {"": document} if as_list else document
    with pytest.raises(UnstorableError, match=f"nested {MAX_NESTING + 1 + as_list} levels"):
        check_document(wrapped, "doc d")
    check_document(_chain(MAX_NESTING, "", False), "doc d")


def test_a_small_dbref_shape_is_found_through_its_encoded_key() -> None:
    with pytest.raises(UnstorableError, match=re.escape("at 'data.r'")):
        check_document({"data": {"r": {"$ref": "c", "$id": 1}}}, "doc d")
