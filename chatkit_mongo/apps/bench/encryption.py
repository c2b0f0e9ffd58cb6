"""Phase (``--encryption``): what client-side encryption costs, on the run's driver.

1. every Store operation, and a whole ChatKit turn, on a ``MongoStore`` with
   ``encryption=`` against the same on one without, in interleaved A/B pairs
   (:meth:`.harness.Run.ab`): the ratio encrypted/plain;
2. attachment bytes uploaded to and downloaded from a ``GridFSAttachmentStore`` on each
   of the two stores, interleaved, and the bytes stored per MiB.

Through the public API only, so it measures what an application gets. Needs a server,
for the key vault. Why the key vault is a collection of the run's own database: the
run drops that database afterwards (or, where the server cannot, empties what it
wrote), so no key-vault database is left behind.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, Final

from ...attachments import GridFSAttachmentStore
from ...encryption import LOCAL_KEY_BYTES, Encryption
from ...schema import CollectionNames, GridFSField
from ...store import MongoStore
from .calls import StoreCalls
from .harness import BenchSettings, Phase, Run, Side, beside, tabulate

MiB: Final = 1024 * 1024
KEY_VAULT: Final = "bench_key_vault"
SIDES: Final = ("encrypted", "plain")
OWNER: Final = "bench-encryption"
ROUNDS: Final = 5
"""Interleaved uploads (and downloads) per side, of ``--mib`` MiB each."""


def writes(base: CollectionNames, settings: BenchSettings) -> list[str]:
    names = [name for side in SIDES for name in beside(base, side).by_kind().values()]
    return [*names, KEY_VAULT]


async def measure(run: Run) -> dict[str, Any]:
    namespace = f"{run.store.database.name}.{KEY_VAULT}"
    settings = Encryption.local(os.urandom(LOCAL_KEY_BYTES), key_vault_namespace=namespace)
    stores = {
        side: run.new_store(
            beside(run.store.collections, side), settings if side == SIDES[0] else None
        )
        for side in SIDES
    }
    pages = run.settings.page_size  # a page of threads: the sidebar's, as ChatKit reads it
    calls = {side: StoreCalls(store, OWNER, run.settings, pages) for side, store in stores.items()}
    for side in SIDES:
        await stores[side].ensure_indexes()  # the key vault's index too, for the encrypted
        await calls[side].seed()
    operations = {}
    if run.settings.pairs:
        label = "encryption: Store operations, encrypted store vs plain store"
        operations = await run.ab(label, calls["encrypted"].sides(), calls["plain"].sides(), SIDES)
    data = await _bytes(run, stores)
    return {"encryption": {"key_vault": namespace, "operations": operations, "bytes": data}}


async def _bytes(run: Run, stores: dict[str, MongoStore[Any]]) -> dict[str, Any]:
    """Uploads and downloads of ``--mib`` MiB through each side's attachment store."""
    size, context = run.settings.mib * MiB, {"user_id": OWNER}
    block = os.urandom(size)
    uploaded: dict[str, list[str]] = {side: [] for side in SIDES}
    sides: dict[str, dict[str, Side]] = {}
    for side, store in stores.items():
        attachments = GridFSAttachmentStore(store, upload_url=_no_upload_url, max_bytes=size)

        async def upload(
            side: str = side, attachments: GridFSAttachmentStore = attachments
        ) -> None:
            added = await attachments.create_and_upload(
                "bench.bin", "application/octet-stream", _chunks(block), context
            )
            uploaded[side].append(added.id)

        async def download(
            side: str = side, attachments: GridFSAttachmentStore = attachments
        ) -> None:
            opened = await attachments.open_download(uploaded[side][-1], context)
            received = sum([len(chunk) async for chunk in opened.chunks])
            if received != size:
                raise AssertionError(f"{side}: downloaded {received} of {size} bytes")

        sides[side] = {"upload": Side(upload), "download": Side(download)}
    label = f"encryption: attachment bytes, {run.settings.mib} MiB each way"
    figures: dict[str, Any] = await run.ab(label, sides["encrypted"], sides["plain"], SIDES, ROUNDS)
    for side, store in stores.items():
        files = store.database[store.collections.bucket_files]
        found = await files.find_one({GridFSField.METADATA_ATTACHMENT_ID: uploaded[side][-1]})
        figures[f"{side}_stored_bytes_per_mib"] = int(found[GridFSField.LENGTH]) / run.settings.mib
        for attachment_id in uploaded[side]:
            await store.delete_attachment(attachment_id, context)
    return {"mib": run.settings.mib, **figures}


def _no_upload_url(attachment_id: str, context: Any) -> str:
    """The benchmark uploads directly; no two-phase upload URL is ever handed out."""
    raise AssertionError("the benchmark makes no two-phase upload")


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def table(report: dict[str, Any]) -> list[str]:
    operations, data = report["encryption"]["operations"], report["encryption"]["bytes"]
    columns = {"plain": ".1f", "encrypted": ".1f", "ratio": ".2f"}
    lines = tabulate(
        "encryption: an encrypted store over a plain one (p50 us of interleaved A/B pairs):",
        {"operation": 20} | columns,
        {
            name: [row["plain_p50_us"], row["encrypted_p50_us"], row["ratio"]]
            for name, row in operations.items()
        },
    )
    ms_per_mib = 1e3 * data["mib"]
    lines += tabulate(
        f"attachment bytes, ms per MiB (p50 of {ROUNDS} interleaved pairs of {data['mib']} MiB):",
        {"bytes": 20} | columns,
        {
            way: [
                data[way]["plain_p50_us"] / ms_per_mib,
                data[way]["encrypted_p50_us"] / ms_per_mib,
                data[way]["ratio"],
            ]
            for way in ("upload", "download")
        },
    )
    extra = data["encrypted_stored_bytes_per_mib"] - data["plain_stored_bytes_per_mib"]
    return [*lines, f"stored: {extra:.0f} bytes more per MiB ({extra / MiB * 100:.3f} %)"]


def chart(axes: Any, report: dict[str, Any]) -> None:
    rows = {**report["encryption"]["operations"]}
    rows |= {way: report["encryption"]["bytes"][way] for way in ("upload", "download")}
    axes.bar(list(rows), [row["ratio"] for row in rows.values()])
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.tick_params(axis="x", labelrotation=60)
    axes.set_ylabel("encrypted p50 / plain p50")
    axes.set_title(f"Encryption's cost (interleaved A/B, {report.get('driver', '?')})")


PHASE = Phase("encryption", measure, table, chart, writes)
