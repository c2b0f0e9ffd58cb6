"""Properties of the CLI's data lifecycle on generated data from several owners.

Each example stores threads (with items of every variant and hostile metadata) and
attachments whose bytes go through ``GridFSAttachmentStore`` (empty, small, and across
GridFS chunk boundaries), for owners that share thread ids. Then:

- ``export`` and ``import`` into an empty database reproduce every document and every
  byte, whole collections compared as BSON, for each owner and for everyone; a second
  import of the same file changes nothing and reports every line unchanged;
- ``purge --owner X`` leaves no document and no chunk of X in any collection and every
  other owner's documents and bytes exactly as they were; ``--dry-run`` before it
  changes nothing and reports exactly the counts the real run then erases.

Backends: mongomock-motor's GridFS and both real drivers on the server (see
``gridfs_backend`` in conftest for why not pymongo-async-mock). Each example is a few
CLI runs, so the CI budget is smaller than the profile's; ``CHATKIT_MONGO_EXAMPLES``
raises it like every other property.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import bson
import mongomock_motor
import pytest
from chatkit.types import ThreadItem, ThreadMetadata
from hypothesis import given, settings
from hypothesis import strategies as st

from chatkit_mongo.operations.erase import PurgeCounts
from chatkit_mongo.operations.transfer import ImportCounts
from chatkit_mongo.schema import KINDS, GridFSField

from .attachment_support import CHUNK, make_attachments
from .cli_support import all_documents, invoke, owner_documents
from .conftest import GRIDFS_BACKENDS, NAMES, RequestContext
from .strategies import StoreRunner, examples, items, threads

OWNERS: Final = ("alice", "bob", "carol")
THREAD_IDS: Final = ("thr_1", "thr_2")
ITEM_IDS: Final = ("msg_1", "msg_2", "msg_3")
CI_EXAMPLES: Final = 20
"""Per property and backend: each example runs the CLI up to eight times."""
SIZES: Final = (CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7)
"""Sizes at and around GridFS chunk boundaries."""

payloads = st.binary(max_size=64) | st.builds(
    lambda size, seed: random.Random(seed).randbytes(size),
    st.sampled_from(SIZES),
    st.integers(0, 2**32),
)


@dataclass
class Upload:
    data: bytes
    thread_id: str | None
    """The thread the attachment is saved with afterwards, as ChatKit does on a message."""


@dataclass
class Tenant:
    threads: list[tuple[ThreadMetadata, list[ThreadItem]]]
    uploads: list[Upload]


@st.composite
def conversations(draw: st.DrawFn) -> tuple[ThreadMetadata, list[ThreadItem]]:
    thread = draw(threads(thread_id=st.sampled_from(THREAD_IDS)))
    thread_items = st.lists(
        items(thread_id=thread.id, item_id=st.sampled_from(ITEM_IDS)),
        max_size=len(ITEM_IDS),
        unique_by=lambda item: item.id,
    )
    return thread, draw(thread_items)


tenant = st.builds(
    Tenant,
    threads=st.lists(conversations(), max_size=2, unique_by=lambda pair: pair[0].id),
    uploads=st.lists(
        st.builds(Upload, payloads, st.none() | st.sampled_from(THREAD_IDS)), max_size=3
    ),
)
tenants = st.dictionaries(st.sampled_from(OWNERS), tenant, min_size=1, max_size=len(OWNERS))


@contextmanager
def _runners(backend: str) -> Iterator[ExitStack]:
    """GridFS enabled on the double, and every runner made inside closed on exit."""
    with ExitStack() as stack:
        if backend == "motor-mock":
            stack.enter_context(mongomock_motor.enabled_gridfs_integration())
        yield stack


def _runner(stack: ExitStack, backend: str) -> StoreRunner:
    runner = StoreRunner(backend)
    stack.callback(runner.close)
    return runner


async def _populate(runner: StoreRunner, data: dict[str, Tenant]) -> None:
    attachments = make_attachments(runner.store)
    for owner, tenant in data.items():
        context = RequestContext(owner)
        for thread, thread_items in tenant.threads:
            await runner.store.save_thread(thread, context)
            for item in thread_items:
                await runner.store.add_thread_item(thread.id, item, context)
        for upload in tenant.uploads:
            made = await attachments.create_and_upload("f.bin", "text/plain", upload.data, context)
            if upload.thread_id is not None:
                linked = made.model_copy(update={"thread_id": upload.thread_id})
                await runner.store.save_attachment(linked, context)


def _encoded(documents: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {name: [bson.encode(d) for d in found] for name, found in documents.items()}


def _cli(runner: StoreRunner, *args: str) -> str:
    result = invoke(runner.backend, runner.database, *args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("backend", GRIDFS_BACKENDS)
@settings(max_examples=examples(CI_EXAMPLES))
@given(data=tenants)
def test_export_then_import_reproduces_everything_and_twice_changes_nothing(
    backend: str, data: dict[str, Tenant]
) -> None:
    with _runners(backend) as stack, tempfile.TemporaryDirectory() as directory:
        source = _runner(stack, backend)
        source.run(_populate(source, data))
        everything = source.run(all_documents(source.database))
        for owner in [None, *OWNERS]:
            out = Path(directory) / f"{owner}.jsonl"
            scope = [] if owner is None else ["--owner", owner]
            _cli(source, "export", *scope, "--out", str(out))
            target = _runner(stack, backend)

            first = _cli(target, "import", str(out))
            imported = _encoded(target.run(all_documents(target.database)))
            second = _cli(target, "import", str(out))

            expected = (
                everything if owner is None else source.run(owner_documents(source.database, owner))
            )
            assert imported == _encoded(expected)
            assert _encoded(target.run(all_documents(target.database))) == imported
            per_kind: dict[str, int] = {kind: len(expected[NAMES.name_of(kind)]) for kind in KINDS}
            assert ImportCounts(inserted=per_kind).describe() in first, first
            assert ImportCounts(unchanged=per_kind).describe() in second, second


def _removed(
    before: dict[str, list[dict[str, Any]]], gone: dict[str, list[dict[str, Any]]]
) -> dict[str, list[bytes]]:
    """``before`` without the documents of ``gone``, as BSON."""
    expected = _encoded(before)
    for name, documents in _encoded(gone).items():
        expected[name] = [d for d in expected[name] if d not in documents]
    return expected


@pytest.mark.parametrize("backend", GRIDFS_BACKENDS)
@settings(max_examples=examples(CI_EXAMPLES))
@given(data=tenants, purged=st.sampled_from(OWNERS))
def test_purge_owner_erases_exactly_that_owner_and_dry_run_predicts_it(
    backend: str, data: dict[str, Tenant], purged: str
) -> None:
    with _runners(backend) as stack:
        runner = _runner(stack, backend)
        runner.run(_populate(runner, data))
        before = runner.run(all_documents(runner.database))
        theirs = runner.run(owner_documents(runner.database, purged))
        counts = PurgeCounts(
            *(
                len(theirs[name])
                for name in (
                    NAMES.threads,
                    NAMES.items,
                    NAMES.attachments,
                    NAMES.bucket_files,
                    NAMES.bucket_chunks,
                )
            )
        )

        dry = _cli(runner, "purge", "--owner", purged, "--dry-run")
        after_dry = _encoded(runner.run(all_documents(runner.database)))
        real = _cli(runner, "purge", "--owner", purged)
        after = runner.run(all_documents(runner.database))

        assert after_dry == _encoded(before)
        assert f"would erase {counts.describe()}" in dry, dry
        assert f"erased {counts.describe()}" in real, real
        assert _encoded(after) == _removed(before, theirs)
        assert not any(runner.run(owner_documents(runner.database, purged)).values())
        purged_files = {file["_id"] for file in theirs[NAMES.bucket_files]}
        chunks = after[NAMES.bucket_chunks]
        assert not [c for c in chunks if c[GridFSField.FILES_ID] in purged_files]
