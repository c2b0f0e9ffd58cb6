"""Model-based test of GridFSAttachmentStore: random create, upload (exact, short, long),
direct upload, download, delete, link to a thread, delete_thread and sweep calls from two
owners, each acting on its own and on the other's attachments, against a model.

After every step, for every attachment ever made and for both owners: the metadata is
visible to its owner only, the bytes download exactly for its owner once complete and
for no one otherwise, and the bucket holds exactly the files and chunks of the complete
attachments: nothing half-written, nothing left behind.

Backends: mongomock-motor's GridFS and both real drivers on the server (see
``gridfs_backend`` in conftest for why not pymongo-async-mock).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

import mongomock_motor
import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chatkit_mongo import AttachmentTooLargeError, IncompleteUploadError, UploadConflictError

from . import capabilities
from .attachment_support import CHUNK, make_attachments
from .conftest import GRIDFS_BACKENDS, NAMES, RequestContext, is_server
from .strategies import StoreRunner

OWNERS: Final = ("alice", "bob")
THREAD_IDS: Final = ("thr_1", "thr_2")
PAYLOADS: Final = (
    b"",
    b"a",
    "h\u00e9llo \U0001f98a".encode(),
    bytes(range(256)) * (CHUNK // 256 + 3),
)
"""Empty, one byte, unicode text, and two GridFS chunks."""
RUNS: Final[defaultdict[str, Counter[str]]] = defaultdict(Counter)

owners = st.sampled_from(OWNERS)
payloads = st.sampled_from(PAYLOADS)
picks = st.integers(0, 7)
"""Which attachment made so far a rule acts on (modulo how many exist)."""


@dataclass
class Modelled:
    """One attachment as the model sees it."""

    owner: str
    id: str
    declared: int | None
    data: bytes | None = None
    """The bytes once complete; None while awaiting them."""
    thread_id: str | None = None
    gone: bool = False


class AttachmentMachine(RuleBasedStateMachine):
    backend: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.patches = ExitStack()
        if self.backend == "motor-mock":
            self.patches.enter_context(mongomock_motor.enabled_gridfs_integration())
        self.runner = StoreRunner(self.backend)
        self.attachments = make_attachments(self.runner.store)
        self.made: list[Modelled] = []
        RUNS[self.backend]["sequences"] += 1
        # The sweep takes abandoned uploads with find_one_and_delete; on a server that
        # lacks it (jongodb) the rule is left out, and proved on the other backends.
        self.sweeps = not is_server(self.backend) or capabilities.has("find_one_and_delete")

    def teardown(self) -> None:
        self.runner.close()
        self.patches.close()

    def _pick(self, pick: int) -> Modelled | None:
        return self.made[pick % len(self.made)] if self.made else None

    def _refused(self, target: Modelled, actor: str) -> bool:
        """Whether ``actor`` must get NotFoundError for ``target``."""
        return target.gone or target.owner != actor

    # ---------------------------------------------------------------- rules

    @rule(owner=owners, size=st.sampled_from([len(p) for p in PAYLOADS]))
    def create(self, owner: str, size: int) -> None:
        params = AttachmentCreateParams(name="f.bin", size=size, mime_type="text/plain")
        created = self.runner.run(self.attachments.create_attachment(params, RequestContext(owner)))
        self.made.append(Modelled(owner, created.id, size))

    @rule(owner=owners, data=payloads)
    def create_and_upload(self, owner: str, data: bytes) -> None:
        call = self.attachments.create_and_upload(
            "f.bin", "text/plain", data, RequestContext(owner)
        )
        self.made.append(Modelled(owner, self.runner.run(call).id, None, data))

    @rule(actor=owners, pick=picks, data=payloads)
    def upload(self, actor: str, pick: int, data: bytes) -> None:
        target = self._pick(pick)
        if target is None:
            return
        call = self.attachments.upload(target.id, data, RequestContext(actor))
        if self._refused(target, actor):
            with pytest.raises(NotFoundError, match=f"Attachment {target.id} not found"):
                self.runner.run(call)
        elif target.data is not None:
            with pytest.raises(UploadConflictError, match="already has its bytes"):
                self.runner.run(call)
        elif target.declared is not None and len(data) > target.declared:
            with pytest.raises(AttachmentTooLargeError, match="its declared size"):
                self.runner.run(call)
        elif target.declared is not None and len(data) < target.declared:
            with pytest.raises(IncompleteUploadError, match=f"{len(data)} bytes arrived"):
                self.runner.run(call)
        else:
            assert self.runner.run(call).upload_descriptor is None
            target.data = data

    @rule(actor=owners, pick=picks)
    def delete(self, actor: str, pick: int) -> None:
        """As ChatKit's server deletes: the bytes, then the metadata."""
        target = self._pick(pick)
        if target is None:
            return
        context = RequestContext(actor)
        self.runner.run(self.attachments.delete_attachment(target.id, context))
        self.runner.run(self.attachments.store.delete_attachment(target.id, context))
        if target.owner == actor:
            target.gone = True

    @rule(pick=picks, thread_id=st.sampled_from(THREAD_IDS))
    def link_to_thread(self, pick: int, thread_id: str) -> None:
        """The owner saves the attachment with a thread, as ChatKit does on a message."""
        target = self._pick(pick)
        if target is None or target.gone:
            return
        context = RequestContext(target.owner)
        stored = self.runner.run(self.attachments.store.load_attachment(target.id, context))
        linked = stored.model_copy(update={"thread_id": thread_id})
        self.runner.run(self.attachments.store.save_attachment(linked, context))
        target.thread_id = thread_id

    @rule(actor=owners, thread_id=st.sampled_from(THREAD_IDS))
    def delete_thread(self, actor: str, thread_id: str) -> None:
        self.runner.run(self.attachments.store.delete_thread(thread_id, RequestContext(actor)))
        for target in self.made:
            if target.owner == actor and target.thread_id == thread_id:
                target.gone = True

    @precondition(lambda self: self.sweeps)
    @rule(later=st.booleans())
    def sweep(self, later: bool) -> None:
        """Now: nothing is old enough to go. Two hours on, with a one-hour cut-off: every
        attachment still awaiting its bytes is abandoned, and goes."""
        now = datetime.now(UTC) + (timedelta(hours=2) if later else timedelta(0))
        report = self.runner.run(
            self.attachments.sweep_orphans(abandoned_after=timedelta(hours=1), now=now)
        )
        abandoned = [t for t in self.made if not t.gone and t.data is None] if later else []
        for target in abandoned:
            target.gone = True
        assert (report.abandoned_uploads, report.orphaned_files) == (len(abandoned), 0)

    # ---------------------------------------------------------------- after every step

    @invariant()
    def each_owner_sees_exactly_its_own_complete_bytes(self) -> None:
        RUNS[self.backend]["comparisons"] += 1
        for target in self.made:
            for actor in OWNERS:
                context = RequestContext(actor)
                if self._refused(target, actor):
                    with pytest.raises(NotFoundError):
                        self.runner.run(self.attachments.store.load_attachment(target.id, context))
                else:
                    loaded = self.runner.run(
                        self.attachments.store.load_attachment(target.id, context)
                    )
                    assert (loaded.id, loaded.thread_id) == (target.id, target.thread_id)
                read = self.attachments.read_bytes(target.id, context)
                if self._refused(target, actor) or target.data is None:
                    with pytest.raises(NotFoundError):
                        self.runner.run(read)
                else:
                    assert self.runner.run(read) == target.data
        complete = [t.data for t in self.made if not t.gone and t.data is not None]
        database = self.runner.database
        files = self.runner.run(database[NAMES.bucket_files].count_documents({}))
        chunks = self.runner.run(database[NAMES.bucket_chunks].count_documents({}))
        assert (files, chunks) == (len(complete), sum(-(-len(d) // CHUNK) for d in complete))


@pytest.mark.parametrize("backend", GRIDFS_BACKENDS)
def test_attachment_store_agrees_with_the_model(backend: str) -> None:
    machine = type(f"AttachmentMachine[{backend}]", (AttachmentMachine,), {"backend": backend})
    run_state_machine_as_test(machine)
    counts = RUNS[backend]
    print(f"{backend}: {counts['sequences']} sequences, {counts['comparisons']} comparisons")
    assert counts["sequences"] > 0
