"""A cold store's first write of each model does not stall the event loop.

In a fresh interpreter (nothing built but what importing the package builds), each
model is read the way the store reads it (through its adapter, which leaves the class
itself unbuilt) and written once through a store whose database answers at once: the
whole call then runs in one step of the loop, so the processor time it takes is the
longest the store's own work can hold the loop. Each must stay under 5 ms. It was 10
to 20 ms when the codec compiled a model's dump at its first write. And no class the
store writes is left for pydantic to build at its first use (1 to 2.5 ms each): the
codec builds them at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Final

from .samples import every_model

_STALL_LIMIT_MS: Final = 5.0

_SCRIPT: Final = """
import asyncio, json, sys, time
from types import SimpleNamespace
from chatkit.types import Thread, ThreadMetadata
from chatkit_mongo import MongoStore
from chatkit_mongo._codec import STORED_MODELS, parse_attachment, parse_item, parse_thread

unbuilt = [model.__name__ for model in STORED_MODELS if not model.__pydantic_complete__]

class Collection:
    async def update_one(self, *args, **kwargs):
        return SimpleNamespace(matched_count=1)
    async def insert_one(self, *args, **kwargs):
        return None

class Database:
    name = "cold"
    client = SimpleNamespace()
    def __getitem__(self, name):
        return Collection()

async def main():
    store = MongoStore(Database(), auto_create_indexes=False)
    context = {"user_id": "alice"}
    calls = []
    for kind, data in json.load(sys.stdin):
        if kind == "thread":
            thread = parse_thread(data)
            calls.append(("ThreadMetadata", store.save_thread(thread, context)))
            page = {"data": [], "has_more": False, "after": None}
            full = Thread.model_validate({**data, "id": "thr_full", "items": page})
            calls.append(("Thread", store.save_thread(full, context)))
        elif kind == "item":
            item = parse_item(data)
            calls.append((type(item).__name__, store.add_thread_item("thr_1", item, context)))
        else:
            attachment = parse_attachment(data)
            calls.append((type(attachment).__name__, store.save_attachment(attachment, context)))
    stalls = {}
    for name, call in calls:
        start = time.thread_time()
        await call
        stalls[name] = (time.thread_time() - start) * 1000
    print(json.dumps({"unbuilt": unbuilt, "stalls": stalls}))

asyncio.run(main())
"""


def test_a_cold_stores_first_write_of_each_model_takes_under_5_ms() -> None:
    models = [
        (_kind(type(model).__name__), model.model_dump(mode="json")) for model, _ in every_model()
    ]
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        input=json.dumps(models),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    assert report["unbuilt"] == [], "classes pydantic would build at their first use"
    stalls: dict[str, float] = report["stalls"]
    assert {"ThreadMetadata", "Thread", "UserMessageItem", "FileAttachment"} <= set(stalls)
    assert len(stalls) == len(models) + 1
    slow = {name: round(ms, 2) for name, ms in stalls.items() if ms >= _STALL_LIMIT_MS}
    assert not slow, f"first writes that held the loop {_STALL_LIMIT_MS} ms or more: {slow}"


def _kind(class_name: str) -> str:
    if class_name == "ThreadMetadata":
        return "thread"
    return "attachment" if class_name.endswith("Attachment") else "item"
