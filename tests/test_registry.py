"""The registry of document kinds is the one vocabulary: every collection name, count,
index, shard key and handle is keyed by a kind it lists."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given
from hypothesis import strategies as st

from chatkit_mongo.operations.erase import PurgeCounts
from chatkit_mongo.schema import (
    DOCUMENT_KINDS,
    INDEXES,
    KINDS,
    MODEL_KINDS,
    RETENTION_INDEXES,
    CollectionNames,
    bucket_collections,
    collection_settings,
    document_kind,
    shard_key_of,
)

_NAME = st.text(st.characters(exclude_characters="$\0."), min_size=1, max_size=12)


def test_every_kind_has_one_entry_a_shard_key_and_a_count() -> None:
    assert len(set(KINDS)) == len(DOCUMENT_KINDS) == len(KINDS)
    assert all(document_kind(kind).name == kind for kind in KINDS)
    assert [shard_key_of(kind).fields for kind in KINDS] == [
        document_kind(kind).key for kind in KINDS
    ]
    assert [f.name for f in fields(PurgeCounts)] == [kind.collection for kind in DOCUMENT_KINDS]
    assert {spec.kind for spec in INDEXES} == set(KINDS)
    assert [spec.kind for spec in RETENTION_INDEXES] == list(MODEL_KINDS)
    assert MODEL_KINDS == ("thread", "item", "attachment")


def test_the_collection_settings_are_the_fields_of_collection_names() -> None:
    assert collection_settings() == tuple(f.name for f in fields(CollectionNames))


@given(st.lists(_NAME, min_size=4, max_size=4, unique=True))
def test_each_kind_lives_in_its_own_collection_named_by_its_setting(names: list[str]) -> None:
    threads, items, attachments, bucket = names
    given_names = CollectionNames(threads, items, attachments, bucket)
    assert given_names.by_kind() == {
        "thread": threads,
        "item": items,
        "attachment": attachments,
        "file": f"{bucket}.files",
        "chunk": f"{bucket}.chunks",
    }
    assert bucket_collections(bucket) == (given_names.bucket_files, given_names.bucket_chunks)
    assert given_names.by_kind(MODEL_KINDS) == {
        "thread": threads,
        "item": items,
        "attachment": attachments,
    }


def test_a_count_is_recorded_and_described_by_kind() -> None:
    counts = PurgeCounts()
    for number, kind in enumerate(KINDS, start=1):
        counts.record(kind, number)
    assert (counts.threads, counts.items, counts.attachments, counts.files, counts.chunks) == (
        1,
        2,
        3,
        4,
        5,
    )
    assert counts.describe() == "1 thread, 2 items, 3 attachments, 4 files, 5 chunks"
