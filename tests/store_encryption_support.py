"""Helpers of the encrypted-store tests: a store's raw documents as BSON bytes, the
content strings a stored ``data`` holds, copying a document under another owner, and a
runner for hypothesis properties on an encrypted store and a plain twin.

The stores run on the real drivers against the suite's wire server: libmongocrypt's key
vault needs one (see ``tests/encryption_fixtures.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from chatkit_mongo import MongoStore
from chatkit_mongo.schema import Field, Kind

from .conftest import NAMES
from .encryption_support import close_client, fresh_encryption, open_client

KINDS: tuple[Kind, ...] = ("thread", "item", "attachment")
_RAW = CodecOptions(document_class=RawBSONDocument)
_T = TypeVar("_T")


def raw_collection(database: Any, kind: Kind) -> Any:
    """The collection of ``kind`` decoding nothing: documents as their stored bytes."""
    return database.get_collection(NAMES.name_of(kind), codec_options=_RAW)


async def raw_documents(database: Any, owner: str) -> list[bytes]:
    """Every stored document of ``owner``, in every collection, as BSON bytes."""
    found: list[bytes] = []
    for kind in KINDS:
        cursor = raw_collection(database, kind).find({Field.OWNER: owner})
        found += [bytes(document.raw) for document in await cursor.to_list(None)]
    return found


async def documents(database: Any, kind: Kind, owner: str) -> list[dict[str, Any]]:
    cursor = database[NAMES.name_of(kind)].find({Field.OWNER: owner})
    return list(await cursor.to_list(None))


def content_strings(value: Any, minimum: int = 8) -> Iterator[str]:
    """Every string and mapping key inside a ``data`` sub-document at least ``minimum``
    UTF-8 bytes long: shorter ones could turn up in random bytes or in the clear fields
    by chance, and would prove nothing either way."""
    if isinstance(value, str):
        if len(value.encode()) >= minimum:
            yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from content_strings(key, minimum)
            yield from content_strings(inner, minimum)
    elif isinstance(value, list):
        for inner in value:
            yield from content_strings(inner, minimum)


def clear_part(document: dict[str, Any]) -> dict[str, Any]:
    """A stored document without what differs by design between an encrypted store and
    a plain one (``data``) or between any two writes (``_id``)."""
    return {key: value for key, value in document.items() if key not in (Field.DATA, "_id")}


async def copy_under(database: Any, kind: Kind, owner: str, new_owner: str) -> int:
    """Copy every stored document of ``owner`` in ``kind`` to ``new_owner``, byte for
    byte but for the owner: as a hostile administrator or a wrong import would."""
    copies = [
        {**document, Field.OWNER: new_owner, "_id": bson.ObjectId()}
        for document in await documents(database, kind, owner)
    ]
    if copies:
        await database[NAMES.name_of(kind)].insert_many(copies)
    return len(copies)


class EncryptedStoreRunner:
    """An event loop, a client, an encrypted store and a plain twin on another database
    of the same server, for hypothesis properties (which call the test body
    synchronously). Examples are kept apart by owner, not by database: a fresh database
    per example would cost its index builds each time."""

    def __init__(self, driver: str, uri: str, **store_options: Any) -> None:
        self._runner = asyncio.Runner()
        self.settings = fresh_encryption()
        self.client = self.run(_open(driver, uri))
        suffix = uuid.uuid4().hex[:12]
        self.database = self.client[f"chatkit_enc_{suffix}"]
        self.plain_database = self.client[f"chatkit_plain_{suffix}"]
        self.store: MongoStore[Any] = MongoStore(
            self.database, encryption=self.settings, **store_options
        )
        self.plain: MongoStore[Any] = MongoStore(self.plain_database, **store_options)

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self._runner.run(coroutine)

    def close(self) -> None:
        self.run(self.store.close())
        self.run(close_client(self.client))
        self._runner.close()


async def _open(driver: str, uri: str) -> Any:
    """Made inside the runner's loop: a client belongs to the loop it starts on."""
    return open_client(driver, uri)
