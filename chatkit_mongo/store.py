"""``MongoStore``: ChatKit's :class:`~chatkit.store.Store` on MongoDB."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Generic, Protocol

from chatkit.store import NotFoundError, Store, StoreItemType
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError
from typing_extensions import TypeVar

from . import queries
from ._checks import check_id, check_limit, check_optional_id, check_order
from ._codec import (
    ATTACHMENT_ADAPTER,
    ITEM_ADAPTER,
    THREAD_ADAPTER,
    check_document,
    dump,
)
from ._driver import AsyncDatabaseLike, identify, resolve, shielded
from ._single_flight import OncePerClient
from .errors import ItemConflictError
from .indexes import IndexStatus, ensure_indexes
from .owner import OwnerResolver, default_owner, resolve_owner
from .queries import Find
from .retention import Clock, Retention
from .schema import CollectionNames, Field, Role, index_specs, sort_key, utc_naive

TContext = TypeVar("TContext", default=Any)
_T = TypeVar("_T")

DEFAULT_MAX_PAGE_SIZE: Final = 1000

ID_PREFIXES: Final[dict[StoreItemType, str]] = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}
"""ChatKit's id prefixes, so ids still tell what they name."""
_ID_RANDOM_BYTES: Final = 12


def new_id(kind: StoreItemType) -> str:
    """``prefix_`` and 96 random bits as hex.

    Why not ChatKit's default: its 8 hex digits (32 bits) reach even odds of a collision
    at about 77,000 ids, and an item id collision makes ``add_thread_item`` refuse a
    message. 96 bits push that past 10^14 ids.
    """
    return f"{ID_PREFIXES[kind]}_{secrets.token_hex(_ID_RANDOM_BYTES)}"


class ThreadBytesRemover(Protocol):
    """Removes the stored bytes of a thread's attachments (the GridFS attachment store)."""

    async def delete_thread_bytes(self, owner: str, thread_id: str) -> None: ...


class MongoStore(Store[TContext], Generic[TContext]):
    """ChatKit threads, items and attachment metadata in three MongoDB collections.

    One document per thread, per item and per attachment, each holding its owner, its
    ids and a sort key at the top level and the pydantic model under ``data``. Every
    query filters on the owner first and is served by an index of
    :data:`chatkit_mongo.schema.INDEXES`; pages are keyset ranges on the sort key, so
    a page costs the same at item 10 as at item 100,000.

    ``database`` is an async database handle from PyMongo's native async API
    (``AsyncMongoClient()[name]``, recommended), from Motor, or from a test double.
    The store never closes a client it was given; one made by :meth:`from_uri` is its
    own and :meth:`close` closes it.
    """

    # Why a class-level registry: applications often build a store per request or per
    # tenant over one shared client. Indexes then need checking once per client and
    # collection set, not once per store, and the first calls after a start-up share one
    # check however many arrive at once (see _single_flight).
    _index_checks: ClassVar[OncePerClient] = OncePerClient()

    def __init__(
        self,
        database: AsyncDatabaseLike,
        *,
        owner: OwnerResolver | None = None,
        collections: CollectionNames | None = None,
        auto_create_indexes: bool = True,
        max_page_size: int = DEFAULT_MAX_PAGE_SIZE,
        retention: timedelta | None = None,
        retention_refresh: timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Build a store over ``database``.

        Args:
            database: async database handle (PyMongo Async, Motor, or a double).
            owner: ``context -> str`` naming the tenant whose data a call may touch.
                Default: ``context.user_id``, else ``context["user_id"]``.
            collections: collection names; defaults to ``chatkit_threads``,
                ``chatkit_items`` and ``chatkit_attachments``.
            auto_create_indexes: create the indexes before first use (once per client).
                Turn off where the database user may not create indexes, and run
                ``chatkit-mongo-create-indexes`` at deploy time instead.
            max_page_size: the largest ``limit`` a page may ask for.
            retention: delete a thread, its items and its attachments this long after
                the thread's last activity (TTL indexes; see :mod:`chatkit_mongo.retention`).
                None (the default) keeps everything and adds nothing to any document.
            retention_refresh: how often at most a busy thread's documents are re-stamped
                with a later expiry; default a tenth of ``retention``, at most one day.
            clock: ``() -> datetime`` that retention reads the time from; for tests.
        """
        if isinstance(max_page_size, bool) or not isinstance(max_page_size, int):
            raise TypeError(f"max_page_size must be an int, not {type(max_page_size).__name__}")
        if max_page_size < 1:
            raise ValueError(f"max_page_size must be at least 1, got {max_page_size}")
        self.database: Final = database
        self.collections: Final = collections or CollectionNames()
        self.max_page_size: Final = max_page_size
        self.retention: Final = Retention.of(retention, retention_refresh, clock)
        self._owner_of: OwnerResolver = owner or default_owner
        names = self.collections.by_role()
        self._collections: dict[Role, Any] = {role: database[name] for role, name in names.items()}
        self._index_key = (database.name, *names.values(), str(self.retention is not None))
        self._indexes_checked = not auto_create_indexes
        self._owns_client = False
        self._closed = False
        # Set by GridFSAttachmentStore. Why a registration and not a constructor argument:
        # the attachment store is built from this store, knows the bucket and registers
        # itself; a store without attachment bytes pays nothing in delete_thread.
        self._thread_bytes: ThreadBytesRemover | None = None
        identify(database.client)

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        database: str = "chatkit",
        owner: OwnerResolver | None = None,
        collections: CollectionNames | None = None,
        auto_create_indexes: bool = True,
        max_page_size: int = DEFAULT_MAX_PAGE_SIZE,
        retention: timedelta | None = None,
        retention_refresh: timedelta | None = None,
        **client_kwargs: Any,
    ) -> MongoStore[Any]:
        """A store with its own PyMongo ``AsyncMongoClient``; :meth:`close` closes it.

        ``client_kwargs`` go to ``AsyncMongoClient`` (timeouts, TLS, pool sizes...).
        """
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, **client_kwargs)
        store: MongoStore[Any] = cls(
            client[database],
            owner=owner,
            collections=collections,
            auto_create_indexes=auto_create_indexes,
            max_page_size=max_page_size,
            retention=retention,
            retention_refresh=retention_refresh,
        )
        store._owns_client = True
        return store

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close the client if this store made it (:meth:`from_uri`); otherwise do nothing.

        A store that closed its client refuses further calls with ``RuntimeError``.
        """
        if self._owns_client:
            self._closed = True
            await resolve(self.database.client.close())

    async def ping(self) -> bool:
        """True if the server answers a ``ping``, False if it cannot be reached."""
        self._check_open()
        try:
            await self.database.command("ping")
        except Exception:  # any failure to reach the server is the answer "no"
            return False
        return True

    async def ensure_indexes(self) -> list[IndexStatus]:
        """Create the indexes the store needs; report each as present or created.

        Idempotent and safe from many processes at once. An existing index with the
        same keys (or name) but other options raises
        :class:`~chatkit_mongo.IndexConflictError` naming it; nothing is created then.
        """
        self._check_open()
        report = await ensure_indexes(
            self.database, self.collections, index_specs(self.retention is not None)
        )
        self._mark_indexed()
        return report

    # ------------------------------------------------------------------ ids

    def generate_thread_id(self, context: TContext) -> str:
        return new_id("thread")

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: TContext
    ) -> str:
        return new_id(item_type)

    # ------------------------------------------------------------------ threads

    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        owner = await self._begin(context)
        key = queries.thread(owner, check_id(thread_id, "thread_id"))
        return await self._load(
            Find("threads", key), THREAD_ADAPTER.validate_python, f"Thread {thread_id} not found"
        )

    async def save_thread(self, thread: ThreadMetadata, context: TContext) -> None:
        """Upsert the thread's metadata; a ``Thread``'s items are never stored here."""
        owner = await self._begin(context)
        metadata = _metadata_only(thread)
        thread_id = check_id(metadata.id, "thread.id")
        what = f"thread {thread_id}"
        fields = {
            **queries.thread(owner, thread_id),
            **_timing(metadata.created_at, thread_id),
            Field.DATA: dump(metadata, THREAD_ADAPTER, what),
        }
        check_document(fields, what)
        if self.retention is not None:
            await self.retention.save_thread(
                self._collections, queries.thread(owner, thread_id), fields, self.retention.now()
            )
            return
        await shielded(
            self._collections["threads"].update_one(
                queries.thread(owner, thread_id), {"$set": fields}, upsert=True
            )
        )

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        owner = await self._begin(context)
        limit = check_limit(limit, self.max_page_size)
        direction = check_order(order)
        after = check_optional_id(after, "after")
        anchor = None
        if after is not None:
            anchor = await self._anchor(
                queries.anchor("threads", queries.thread(owner, after)),
                f"Thread {after} not found",
            )
        return await self._page(
            queries.threads_page(owner, anchor, direction, limit), THREAD_ADAPTER.validate_python
        )

    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Delete the thread's items, its attachments' bytes (when a
        ``GridFSAttachmentStore`` is registered) and their metadata, then the thread.

        Why the thread last: should the process die halfway, the thread is still there,
        so deleting it again (the user can; it is idempotent) finishes the erasure.
        Deleting it first would hide it, but leave items and bytes nobody can reach or
        erase any more. Why the bytes before the metadata: the metadata finds the bytes.
        """
        owner = await self._begin(context)
        thread_id = check_id(thread_id, "thread_id")
        scope = queries.thread(owner, thread_id)

        async def cascade() -> None:
            await self._collections["items"].delete_many(scope)
            if self._thread_bytes is not None:
                await self._thread_bytes.delete_thread_bytes(owner, thread_id)
            await self._collections["attachments"].delete_many(scope)
            await self._collections["threads"].delete_one(scope)

        await shielded(cascade())

    # ------------------------------------------------------------------ items

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: TContext
    ) -> Page[ThreadItem]:
        owner = await self._begin(context)
        check_id(thread_id, "thread_id")
        limit = check_limit(limit, self.max_page_size)
        direction = check_order(order)
        after = check_optional_id(after, "after")
        anchor = None
        if after is not None:
            anchor = await self._anchor(
                queries.anchor("items", queries.item(owner, thread_id, after)),
                f"Item {after} not found in thread {thread_id}",
            )
        return await self._page(
            queries.items_page(owner, thread_id, anchor, direction, limit),
            ITEM_ADAPTER.validate_python,
        )

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert a new item; never overwrite one already stored under its id.

        Why insert-only: ChatKit adds an item when it is done and relies on the store
        not to replace an item that another step saved. Re-adding an identical item (a
        retry) is a no-op; a different item under a taken id raises
        :class:`~chatkit_mongo.ItemConflictError` and the stored item stays as it was.
        """
        owner = await self._begin(context)
        key, fields = self._item_fields(owner, thread_id, item)
        fields |= await self._expiry(owner, thread_id)
        try:
            await shielded(self._collections["items"].insert_one(fields))
        except DuplicateKeyError as exc:
            stored = await self._find_one(Find("items", key))
            if stored is None:
                # Why not "other content": nothing is stored under this id, so either a
                # racing writer removed it meanwhile or another unique index refused it.
                raise ItemConflictError(
                    f"Item {item.id} was refused as a duplicate in thread {thread_id}, yet no "
                    "item with this id is stored there now (removed by a concurrent writer, "
                    f"or refused by another unique index: {exc}); nothing was written"
                ) from exc
            if stored[Field.DATA] == fields[Field.DATA]:
                return
            raise ItemConflictError(
                f"Item {item.id} already exists in thread {thread_id} with other content; "
                "add_thread_item never overwrites (use save_item to replace it)"
            ) from None

    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or replace the item with this id in this thread."""
        owner = await self._begin(context)
        key, fields = self._item_fields(owner, thread_id, item)
        fields |= await self._expiry(owner, thread_id)
        await shielded(self._collections["items"].update_one(key, {"$set": fields}, upsert=True))

    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        owner = await self._begin(context)
        key = queries.item(owner, check_id(thread_id, "thread_id"), check_id(item_id, "item_id"))
        return await self._load(
            Find("items", key),
            ITEM_ADAPTER.validate_python,
            f"Item {item_id} not found in thread {thread_id}",
        )

    async def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        owner = await self._begin(context)
        key = queries.item(owner, check_id(thread_id, "thread_id"), check_id(item_id, "item_id"))
        await shielded(self._collections["items"].delete_one(key))

    # ------------------------------------------------------------------ attachments

    async def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Upsert attachment metadata; ``thread_id`` is copied to the top level so that
        ``delete_thread`` can find the thread's attachments through an index."""
        owner = await self._begin(context)
        key, fields = self._attachment_fields(owner, attachment)
        fields |= await self._expiry(owner, fields[Field.THREAD_ID])
        await shielded(
            self._collections["attachments"].update_one(key, {"$set": fields}, upsert=True)
        )

    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        owner = await self._begin(context)
        key = queries.attachment(owner, check_id(attachment_id, "attachment_id"))
        return await self._load(
            Find("attachments", key),
            ATTACHMENT_ADAPTER.validate_python,
            f"Attachment {attachment_id} not found",
        )

    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        owner = await self._begin(context)
        key = queries.attachment(owner, check_id(attachment_id, "attachment_id"))
        await shielded(self._collections["attachments"].delete_one(key))

    # ------------------------------------------------------------------ internals

    async def _begin(self, context: TContext) -> str:
        """Every call starts here: refuse a closed store or an owner-less context, and
        make sure the indexes exist (once per client) before anything is written."""
        self._check_open()
        owner = resolve_owner(self._owner_of, context)
        if not self._indexes_checked:
            # Why a flag of the store's own on top of the registry: after the first call
            # the hot path costs one attribute read, no lock.
            await self._index_checks.run(self.database.client, self._index_key, self.ensure_indexes)
            self._indexes_checked = True
        return owner

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MongoStore is closed")

    def _mark_indexed(self) -> None:
        self._index_checks.mark_done(self.database.client, self._index_key)

    def _item_fields(
        self, owner: str, thread_id: str, item: ThreadItem
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The item's key and full document, checked before anything is sent."""
        check_id(thread_id, "thread_id")
        item_id = check_id(item.id, "item.id")
        if item.thread_id != thread_id:
            raise ValueError(
                f"item {item_id} says it belongs to thread {item.thread_id!r}, "
                f"but is being stored in thread {thread_id!r}"
            )
        what = f"item {item_id} of thread {thread_id}"
        key = queries.item(owner, thread_id, item_id)
        fields = {
            **key,
            **_timing(item.created_at, item_id),
            Field.DATA: dump(item, ITEM_ADAPTER, what),
        }
        check_document(fields, what)
        return key, fields

    def _attachment_fields(
        self, owner: str, attachment: Attachment
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The attachment's key and the fields ``save_attachment`` sets, checked."""
        attachment_id = check_id(attachment.id, "attachment.id")
        what = f"attachment {attachment_id}"
        key = queries.attachment(owner, attachment_id)
        fields = {
            **key,
            Field.THREAD_ID: check_optional_id(attachment.thread_id, "attachment.thread_id"),
            Field.DATA: dump(attachment, ATTACHMENT_ADAPTER, what),
        }
        check_document(fields, what)
        return key, fields

    async def _expiry(self, owner: str, thread_id: str | None) -> dict[str, Any]:
        """With retention on, the expiry field a document of ``thread_id`` is written with
        (its thread's, extended if due); a document of no thread lives ``retention`` from
        now. With retention off, nothing: no field, no round trip."""
        if self.retention is None:
            return {}
        now = self.retention.now()
        if thread_id is None:
            return {Field.EXPIRES_AT: self.retention.deadline(now)}
        expiry = await self.retention.thread_expiry(self._collections, owner, thread_id, now)
        return {Field.EXPIRES_AT: expiry}

    def _alive(self) -> dict[str, Any]:
        """The filter every read adds so expired documents are gone: none without retention."""
        return {} if self.retention is None else queries.alive(self.retention.now())

    async def _find_one(self, find: Find) -> dict[str, Any] | None:
        find = self._visible(find)
        document: dict[str, Any] | None = await self._collections[find.role].find_one(
            find.filter, find.projection
        )
        return document

    async def _load(self, find: Find, parse: Callable[[Any], _T], not_found: str) -> _T:
        """The model of the one document ``find`` names, or ChatKit's ``NotFoundError``."""
        document = await self._find_one(find)
        if document is None:
            raise NotFoundError(not_found)
        return parse(document[Field.DATA])

    async def _anchor(self, find: Find, not_found: str) -> str:
        document = await self._find_one(find)
        if document is None:
            raise NotFoundError(not_found)
        anchor: str = document[Field.SORT_KEY]
        return anchor

    def _visible(self, find: Find) -> Find:
        return find if self.retention is None else queries.visible(find, self.retention.now())

    async def _page(self, find: Find, parse: Callable[[Any], _T]) -> Page[_T]:
        find = self._visible(find)
        cursor = self._collections[find.role].find(find.filter, find.projection)
        documents = await cursor.sort(list(find.sort)).limit(find.limit).to_list(None)
        has_more = len(documents) >= find.limit
        data = [parse(document[Field.DATA]) for document in documents[: find.limit - 1]]
        return Page(data=data, has_more=has_more, after=_last_id(data) if has_more else None)


def _metadata_only(thread: ThreadMetadata) -> ThreadMetadata:
    """A ``Thread`` (metadata plus a page of items) reduced to its metadata."""
    if type(thread) is ThreadMetadata:
        return thread
    return ThreadMetadata(**{name: getattr(thread, name) for name in ThreadMetadata.model_fields})


def _timing(created_at: datetime, element_id: str) -> dict[str, Any]:
    return {
        Field.SORT_KEY: sort_key(created_at, element_id),
        Field.CREATED_AT: utc_naive(created_at),
    }


def _last_id(data: list[Any]) -> str | None:
    return str(data[-1].id) if data else None
