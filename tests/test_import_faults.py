"""``import`` under a lost reply: stopped by one at any of its batches, whether the
batch landed or not, a second run ends with exactly what one fault-free run writes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from chatkit_mongo.operations.transfer import import_data

from .cli_support import all_documents, encoded, run, seed
from .conftest import NAMES
from .fault_support import FAULTS, Faulty, Timing
from .samples import BASE_TIME


class _FaultyAt:
    """A database whose ``bulk_write`` calls are counted across its collections; the one
    numbered ``at`` (from 0) fails with a connection reset, before or after it lands."""

    def __init__(self, inner: Any, at: int, timing: Timing) -> None:
        self._inner, self._at, self._timing = inner, at, timing
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __getitem__(self, name: str) -> Any:
        return _Counting(self, self._inner[name])

    def faulty(self, collection: Any) -> Any:
        number, self.calls = self.calls, self.calls + 1
        if number == self._at:
            return Faulty(collection, "bulk_write", FAULTS["connection reset"], self._timing)
        return collection


class _Counting:
    def __init__(self, database: _FaultyAt, inner: Any) -> None:
        self._database, self._inner = database, inner

    def __getattr__(self, name: str) -> Any:
        if name == "bulk_write":
            return getattr(self._database.faulty(self._inner), name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("timing", ["request lost", "reply lost"])
async def test_an_import_stopped_by_a_lost_reply_at_any_batch_finishes_when_run_again(
    backend: str, client: Any, database: Any, tmp_path: Path, timing: Timing
) -> None:
    await seed(database, "alice", ["thr_a1", "thr_a2"], BASE_TIME)
    await seed(database, "bob", ["thr_b1"], BASE_TIME)
    out = tmp_path / "all.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    expected = encoded(await all_documents(database))
    counting = _FaultyAt(client[f"chatkit_import_{uuid.uuid4().hex[:12]}"], -1, timing)
    await import_data(counting, NAMES, out)
    batches = counting.calls
    assert batches >= 5
    for at in range(batches):
        target = client[f"chatkit_import_{uuid.uuid4().hex[:12]}"]
        with pytest.raises(type(FAULTS["connection reset"])):
            await import_data(_FaultyAt(target, at, timing), NAMES, out)
        await import_data(target, NAMES, out)
        assert encoded(await all_documents(target)) == expected, at
