"""The write-time document check takes its fast paths only where they are provably exact.

``check_document`` skips the nesting and DBRef walk for a small document with no
``$ref`` string element, and skips every check for a document whose sub-document is a
proved dump within its bound; these properties hold it to the full check: for every
generated document (model dumps, hostile metadata, BSON-special objects, nesting around
MongoDB's limit, values the encoder refuses, sizes around the limit) it refuses exactly
when, and for the reason, a reference that always walks and always encodes refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from unittest import mock

import bson
import pytest
from bson.errors import InvalidDocument
from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from chatkit_mongo import UnstorableError
from chatkit_mongo._codec import (
    ITEM_ADAPTER,
    MAX_DOCUMENT_BYTES,
    MAX_NESTING,
    THREAD_ADAPTER,
    Dumped,
    check_document,
    dump,
    is_dbref_shaped,
)

from .samples import every_model
from .strategies import (
    attachments,
    items,
    json_values,
    metadata,
    nested,
    special_metadata,
    threads,
)
from .test_codec_proof import hostile_models

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


def _assert_same_verdict(document: dict[str, Any], proof: Dumped | None = None) -> None:
    reason = _reference(document)
    if reason is None:
        check_document(document, "doc d", proof)
        return
    with pytest.raises(UnstorableError, match=r"^doc d .*" + _REASONS[reason]):
        check_document(document, "doc d", proof)


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


# ---------------------------------------------------------------- a proved dump's bound


def _stored(data: dict[str, Any]) -> dict[str, Any]:
    """A document as the store writes one: ids, sort key, naive date, the dump."""
    return {
        "owner": "o",
        "thread_id": "t",
        "item_id": "i",
        "sort_key": "00000000000000000001 i",
        "created_at": datetime(2020, 1, 1),
        "data": data,
    }


def _assert_proof_is_sound(model: BaseModel, adapter: TypeAdapter[Any]) -> None:
    """Where the dump's bound is within the limit, the dump encodes, within the bound,
    nested less than the limit, with no DBRef shape; and the check, given the proof,
    refuses exactly as the full check does."""
    try:
        proof = dump(model, adapter, "model m")
    except Exception:  # refused or raised: test_codec_proof holds that to the full check
        return
    data, bound = proof
    if bound is not None and bound <= MAX_DOCUMENT_BYTES:
        assert len(bson.encode(data)) <= bound
        assert _depth(data) < MAX_NESTING
        assert not _has_dbref({"data": data})
    _assert_same_verdict(_stored(data), proof)


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@given(hostile_models())
def test_a_proved_bound_settles_the_checks_only_as_the_full_check_would(
    case: tuple[BaseModel, TypeAdapter[Any]],
) -> None:
    _assert_proof_is_sound(*case)


@given(threads(), st.one_of(refused_values, nestings, special_metadata, json_values))
def test_metadata_the_checks_refuse_is_never_settled_by_the_bound(
    thread: ThreadMetadata, value: Any
) -> None:
    """Values BSON refuses, nesting around the limit, DBRef shapes and Extended JSON
    keys, put in metadata unvalidated (as assignment would)."""
    thread.metadata["x"] = value
    _assert_proof_is_sound(thread, THREAD_ADAPTER)


@pytest.mark.parametrize("over", [-4096, -64, -1, 0, 1, 64])
def test_a_proved_dump_around_the_size_limit_gets_the_full_checks_verdict(over: int) -> None:
    def thread(text: str) -> ThreadMetadata:
        return ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata={"big": text})

    empty = len(bson.encode(_stored(dump(thread(""), THREAD_ADAPTER, "t")[0])))
    limit = MAX_DOCUMENT_BYTES - 1024
    size = limit - empty + over  # of the text: "é" is two bytes in UTF-8, "x" one
    proof = dump(thread("é" * (size // 2) + "x" * (size % 2)), THREAD_ADAPTER, "t")
    assert len(bson.encode(_stored(proof[0]))) == limit + over
    _assert_same_verdict(_stored(proof[0]), proof)


def _key_chars(count: int) -> int:
    """The characters of the keys "0" to ``str(count - 1)``, an array's keys."""
    total, start, width = 0, 0, 1
    while start < count:
        end = min(count, 10**width)
        total += (end - start) * width
        start, width = end, width + 1
    return total


def _entries(count: int) -> dict[str, None]:
    """``count`` entries keyed by 40 digits each: the size is the keys and headers."""
    return dict.fromkeys(f"{index:040d}" for index in range(count))


_Many = Callable[[int], tuple[BaseModel, TypeAdapter[Any]]]
_MANY: dict[str, tuple[_Many, Callable[[int], int]]] = {
    "compiled list of strs": (lambda n: (
        ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), allowed_image_domains=[""] * n),
        THREAD_ADAPTER,
    ), _key_chars),
    "compiled list of models": (lambda n: (
        AssistantMessageItem(
            id="m", thread_id="t", created_at=datetime(2020, 1, 1),
            content=[AssistantMessageContent(text="")] * n,
        ),
        ITEM_ADAPTER,
    ), _key_chars),
    "json list": (lambda n: (
        ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata={"k": [None] * n}),
        THREAD_ADAPTER,
    ), _key_chars),
    "compiled dict": (lambda n: (
        ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata=_entries(n)),
        THREAD_ADAPTER,
    ), lambda n: 0),
    "json dict": (lambda n: (
        ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata={"k": _entries(n)}),
        THREAD_ADAPTER,
    ), lambda n: 0),
}  # fmt: skip
"""Models whose size is mostly the keys and headers of ``n`` elements, not their values:
the elements of an array (keys "0", "1"...: the characters of ``n`` keys, the second
function) or an object's entries (keys of one width, counted with each element)."""


@pytest.mark.parametrize("case", list(_MANY))
def test_many_small_elements_around_the_size_limit_get_the_full_checks_verdict(case: str) -> None:
    build, key_chars = _MANY[case]

    def stored(count: int) -> tuple[dict[str, Any], Dumped]:
        dumped = dump(*build(count), "model m")
        return _stored(dumped[0]), dumped

    empty, one = (len(bson.encode(stored(count)[0])) for count in (0, 1))
    per_element = one - empty - key_chars(1)

    def size(count: int) -> int:
        return empty + count * per_element + key_chars(count)

    limit = MAX_DOCUMENT_BYTES - 1024
    low, high = 0, limit  # the most elements that fit: bisected on the formula
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if size(middle) <= limit else (low, middle - 1)
    document, proof = stored(low)
    assert len(bson.encode(document)) == size(low) <= limit
    check_document(document, "doc d", proof)
    document, proof = stored(low + 1)
    assert len(bson.encode(document)) == size(low + 1) > limit
    with pytest.raises(UnstorableError, match=r"^doc d is \d+ bytes as BSON"):
        check_document(document, "doc d", proof)


def test_a_proof_settles_nothing_for_a_document_that_holds_another_sub_document() -> None:
    proof = dump(ThreadMetadata(id="t", created_at=datetime(2020, 1, 1)), THREAD_ADAPTER, "t")
    with pytest.raises(UnstorableError, match="nested"):
        check_document(_stored(nested(MAX_NESTING + 1)), "doc d", proof)


def test_a_proved_dump_is_checked_without_encoding_it() -> None:
    """The point of the bound: ChatKit's models, plain or in any language, are written
    with no encode but the driver's. (The check's own encode is made to fail here.)"""
    text = "Grüße, 你好, 🦊: " * 50
    models = [
        *every_model(),
        (ThreadMetadata(id="t", created_at=datetime.now(), title=text, metadata={"k": [text]}),
         THREAD_ADAPTER),
    ]  # fmt: skip
    settled = 0
    with mock.patch.object(bson, "encode", side_effect=AssertionError("encoded")):
        for model, adapter in models:
            proof = dump(model, adapter, "model m")
            if proof[1] is not None:
                check_document(_stored(proof[0]), "model m", proof)
                settled += 1
    assert settled >= len(models) - 4, "fewer models than expected were settled by their bound"
    assert dump(models[-1][0], THREAD_ADAPTER, "t")[1] is not None


def test_a_lone_surrogate_leaves_the_bound_to_the_full_check() -> None:
    item = ITEM_ADAPTER.validate_python(
        {"type": "assistant_message", "id": "m", "thread_id": "t",
         "created_at": datetime(2020, 1, 1), "content": [{"text": "a\ud800"}]}
    )  # fmt: skip
    proof = dump(item, ITEM_ADAPTER, "item m")
    with pytest.raises(UnstorableError, match="lone surrogate"):
        check_document(_stored(proof[0]), "item m", proof)
