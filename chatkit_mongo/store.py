"""``MongoStore``: ChatKit's :class:`~chatkit.store.Store` on MongoDB."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic

from chatkit.store import NotFoundError, Store, StoreItemType, default_generate_id
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pymongo.errors import DuplicateKeyError
from typing_extensions import TypeVar

from . import _queries as queries
from ._checks import Order, check_id, check_limit, check_optional_id, check_order
from ._codec import (
    ITEM_ADAPTER,
    THREAD_ADAPTER,
    Dumped,
    check_document,
    dump,
    parse_attachment,
    parse_item,
    parse_thread,
)
from ._driver import AsyncDatabaseLike, identify, maybe_await, open_client, shielded
from ._persistence import CollectionWrapper, Persistence
from ._queries import Find
from .encryption import Encryption
from .errors import ItemConflictError
from .operations.indexes import IndexStatus
from .owner import OwnerResolver
from .retention import Clock, Retention
from .schema import (
    ENVELOPE_BYTES,
    CollectionNames,
    Field,
    document_kind,
    sort_key,
    utc_naive,
)

if TYPE_CHECKING:
    from ._encryption import OwnerEncryption

TContext = TypeVar("TContext", default=Any)
_T = TypeVar("_T")

DEFAULT_MAX_PAGE_SIZE: Final = 1000
_ID_RANDOM_BYTES: Final = 12


def new_id(kind: str) -> str:
    """ChatKit's prefix for ``kind`` (``thr``, ``msg``...), ``_`` and 96 random bits as hex.

    Why not ChatKit's default: its 8 hex digits (32 bits) reach even odds of a collision
    at about 77,000 ids, and an item id collision makes ``add_thread_item`` refuse a
    message. 96 bits push that past 10^14 ids. Why the prefix comes from ChatKit's own
    generator rather than a copy of its table: ids keep telling what they name as ChatKit
    changes, and an item type ChatKit adds later (which its table may not know yet) gets
    its type as the prefix instead of a ``KeyError``.
    """
    try:
        prefix = default_generate_id(kind).rpartition("_")[0]  # type: ignore[arg-type]
    except KeyError:
        prefix = kind
    return f"{prefix}_{secrets.token_hex(_ID_RANDOM_BYTES)}"


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
        wrap_collection: CollectionWrapper | None = None,
        encryption: Encryption | OwnerEncryption | None = None,
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
            wrap_collection: ``(kind, collection) -> collection``, applied once to each
                collection handle: the place for instrumentation (counting or tracing
                calls) and for injecting driver faults in tests.
            encryption: encrypt the content of threads, items and attachments with a
                data key per owner (:class:`~chatkit_mongo.encryption.Encryption`; needs
                ``chatkit-mongo[encryption]`` and a PyMongo Async or Motor client, whose
                server also holds the key vault). None (the default) stores content as
                it is. See docs/encryption.md for what it protects. Settings
                make the store open its own engine, which :meth:`close` closes. An
                :class:`~chatkit_mongo.OwnerEncryption` engine already open is used as
                it is and left open, like a client the store was given.
        """
        if isinstance(max_page_size, bool) or not isinstance(max_page_size, int):
            raise TypeError(f"max_page_size must be an int, not {type(max_page_size).__name__}")
        if max_page_size < 1:
            raise ValueError(f"max_page_size must be at least 1, got {max_page_size}")
        self.database: Final = database
        self.collections: Final = collections or CollectionNames()
        self.max_page_size: Final = max_page_size
        self.retention: Final = Retention.of(retention, retention_refresh, clock)
        engine = _engine(encryption, database)
        self.encryption: Final = None if engine is None else engine.config
        """The encryption settings, or None: content is stored as it is."""
        self.persistence: Final = Persistence(
            database,
            self.collections,
            owner=owner,
            retention=self.retention,
            auto_create_indexes=auto_create_indexes,
            wrap_collection=wrap_collection,
            encryption=engine,
        )
        """The collections and every multi-document operation, shared with the
        attachment store; see :mod:`chatkit_mongo._persistence`."""
        self._owns_client = False
        self._owns_engine = isinstance(encryption, Encryption)
        identify(database.client)

    @classmethod
    def from_uri(cls, uri: str, *, database: str = "chatkit", **options: Any) -> MongoStore[Any]:
        """A store with its own PyMongo ``AsyncMongoClient``; :meth:`close` closes it.

        ``options`` named like a keyword of :meth:`__init__` (``owner``, ``retention``,
        ``clock``...: every one of them) go to the store; the others go to
        ``AsyncMongoClient`` (timeouts, TLS, pool sizes...). Why read from the signature:
        the list of store options then lives in one place and cannot drift (it once
        dropped ``clock``).
        """
        keywords = _keyword_options(cls)
        store_options = {name: value for name, value in options.items() if name in keywords}
        client_options = {name: value for name, value in options.items() if name not in keywords}
        client = open_client(uri, **client_options)
        store: MongoStore[Any] = cls(client[database], **store_options)
        store._owns_client = True
        return store

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close the client if this store made it (:meth:`from_uri`), and the encryption
        engine if it made it (from settings); otherwise do nothing.

        A store that closed its client or its engine, or that encrypts with an engine
        it was given, refuses further calls with :class:`~chatkit_mongo.StoreClosedError`
        (a ``RuntimeError``).
        """
        engine = self.persistence.encryption
        if engine is not None:
            self.persistence.close()
            if self._owns_engine:
                await engine.close()
        if self._owns_client:
            self.persistence.close()
            await maybe_await(self.database.client.close())

    async def ping(self) -> bool:
        """True if the server answers a ``ping``, False if it cannot be reached."""
        self.persistence.check_open()
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
        return await self.persistence.ensure_indexes()

    # ------------------------------------------------------------------ ids

    def generate_thread_id(self, context: TContext) -> str:
        return new_id("thread")

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: TContext
    ) -> str:
        return new_id(item_type)

    # ------------------------------------------------------------------ threads

    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        owner = await self.persistence.begin(context)
        key = queries.thread_filter(owner, check_id(thread_id, "thread_id"))
        return await self._load(
            owner,
            Find("thread", key),
            parse_thread,
            f"Thread {thread_id} not found",
        )

    async def save_thread(self, thread: ThreadMetadata, context: TContext) -> None:
        """Upsert the thread's metadata; a ``Thread``'s items are never stored here."""
        owner = await self.persistence.begin(context)
        metadata = _metadata_only(thread)
        thread_id = check_id(metadata.id, "thread.id")
        what = f"thread {thread_id}"
        key = queries.thread_filter(owner, thread_id)
        dumped = dump(metadata, THREAD_ADAPTER, what)
        fields = _document(key, metadata.created_at, thread_id, dumped, what)
        fields[Field.DATA] = await self.persistence.seal(owner, fields[Field.DATA])
        await self.persistence.save_thread(key, fields)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        owner = await self.persistence.begin(context)
        return await self._keyset_page(
            limit,
            after,
            order,
            anchor_of=lambda after_id: queries.anchor(
                "thread", queries.thread_filter(owner, after_id)
            ),
            not_found="Thread {after} not found",
            page_of=lambda anchor, direction, size: queries.threads_page(
                owner, anchor, direction, size
            ),
            parse=parse_thread,
            owner=owner,
        )

    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        """Delete the thread with its items, its attachments' metadata and (when a
        ``GridFSAttachmentStore`` uses this store) their bytes: the one erase cascade of
        :meth:`Persistence.erase <chatkit_mongo._persistence.Persistence.erase>`, thread
        last, so a delete cut short is finished by deleting again (it is idempotent)."""
        owner = await self.persistence.begin(context)
        thread_id = check_id(thread_id, "thread_id")
        await self.persistence.erase(owner, queries.thread_filter(owner, thread_id))

    # ------------------------------------------------------------------ items

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: TContext
    ) -> Page[ThreadItem]:
        owner = await self.persistence.begin(context)
        check_id(thread_id, "thread_id")
        return await self._keyset_page(
            limit,
            after,
            order,
            anchor_of=lambda after: queries.anchor(
                "item", queries.item_filter(owner, thread_id, after)
            ),
            not_found=f"Item {{after}} not found in thread {thread_id}",
            page_of=lambda anchor, direction, size: queries.items_page(
                owner, thread_id, anchor, direction, size
            ),
            parse=parse_item,
            owner=owner,
        )

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert a new item; never overwrite one already stored under its id.

        Why insert-only: ChatKit adds an item when it is done and relies on the store
        not to replace an item that another step saved. Re-adding an identical item (a
        retry) is a no-op; a different item under a taken id raises
        :class:`~chatkit_mongo.ItemConflictError` and the stored item stays as it was.
        """
        owner = await self.persistence.begin(context)
        key, fields = self._item_fields(owner, thread_id, item)
        data = fields[Field.DATA]
        fields[Field.DATA] = await self.persistence.seal(owner, data)
        if self.retention is not None:  # Why the test here: off, not even an empty await
            fields |= await self.persistence.expiry(owner, thread_id)
        try:
            await shielded(self.persistence.collection("item").insert_one(fields))
        except DuplicateKeyError as exc:
            stored = await self.persistence.find_one(Find("item", key))
            if stored is None:
                # Why not "other content": nothing is stored under this id, so either a
                # racing writer removed it meanwhile or another unique index refused it.
                raise ItemConflictError(
                    f"Item {item.id} was refused as a duplicate in thread {thread_id}, yet no "
                    "item with this id is stored there now (removed by a concurrent writer, "
                    f"or refused by another unique index: {exc}); nothing was written"
                ) from exc
            # Why the plaintexts are compared: two encryptions of one item differ (random
            # IVs). A stored item this owner cannot read counts as other content.
            if await self.persistence.unseal(owner, stored[Field.DATA]) == data:
                return
            raise ItemConflictError(
                f"Item {item.id} already exists in thread {thread_id} with other content; "
                "add_thread_item never overwrites (use save_item to replace it)"
            ) from None

    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        """Insert or replace the item with this id in this thread."""
        owner = await self.persistence.begin(context)
        key, fields = self._item_fields(owner, thread_id, item)
        fields[Field.DATA] = await self.persistence.seal(owner, fields[Field.DATA])
        if self.retention is not None:  # Why the test here: off, not even an empty await
            fields |= await self.persistence.expiry(owner, thread_id)
        await shielded(
            self.persistence.collection("item").update_one(key, {"$set": fields}, upsert=True)
        )

    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        owner = await self.persistence.begin(context)
        key = queries.item_filter(
            owner, check_id(thread_id, "thread_id"), check_id(item_id, "item_id")
        )
        return await self._load(
            owner,
            Find("item", key),
            parse_item,
            f"Item {item_id} not found in thread {thread_id}",
        )

    async def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        owner = await self.persistence.begin(context)
        key = queries.item_filter(
            owner, check_id(thread_id, "thread_id"), check_id(item_id, "item_id")
        )
        await shielded(self.persistence.collection("item").delete_one(key))

    # ------------------------------------------------------------------ attachments

    async def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        """Upsert attachment metadata; ``thread_id`` is copied to the top level so that
        ``delete_thread`` can find the thread's attachments through an index."""
        owner = await self.persistence.begin(context)
        key, fields = await self.persistence.sealed_attachment_document(owner, attachment)
        if self.retention is not None:
            fields |= await self.persistence.expiry(owner, fields[Field.THREAD_ID])
        await shielded(
            self.persistence.collection("attachment").update_one(key, {"$set": fields}, upsert=True)
        )

    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        owner = await self.persistence.begin(context)
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))
        return await self._load(
            owner,
            Find("attachment", key),
            parse_attachment,
            f"Attachment {attachment_id} not found",
        )

    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        owner = await self.persistence.begin(context)
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))
        await shielded(self.persistence.collection("attachment").delete_one(key))

    # ------------------------------------------------------------------ internals

    def _item_fields(
        self, owner: str, thread_id: str, item: ThreadItem
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The item's key and full document, checked before anything is sent.

        Why the ``thread_id`` argument decides where the item goes, even when the item's
        own ``thread_id`` field names another thread: ChatKit's Store contract (its own
        store tests add an item built for one thread to another and expect it back equal),
        so the item is stored under the argument and returned exactly as given.
        """
        check_id(thread_id, "thread_id")
        item_id = check_id(item.id, "item.id")
        what = f"item {item_id} of thread {thread_id}"
        key = queries.item_filter(owner, thread_id, item_id)
        dumped = dump(item, ITEM_ADAPTER, what)
        fields = _document(key, item.created_at, item_id, dumped, what)
        return key, fields

    async def _load(self, owner: str, find: Find, parse: Callable[[Any], _T], not_found: str) -> _T:
        """The model of the one document ``find`` names, or ChatKit's ``NotFoundError``
        (also for a document ``owner`` cannot read: see ``Persistence.unseal``)."""
        document = await self.persistence.find_one(find)
        id_field = document_kind(find.kind).id_field
        assert id_field is not None  # a model's kind: thread, item or attachment
        data = (
            None
            if document is None
            else await self.persistence.unseal(owner, document[Field.DATA], find.filter[id_field])
        )
        if data is None:
            raise NotFoundError(not_found)
        return parse(data)

    async def _anchor(self, find: Find, not_found: str) -> str:
        document = await self.persistence.find_one(find)
        if document is None:
            raise NotFoundError(not_found)
        anchor: str = document[Field.SORT_KEY]
        return anchor

    async def _keyset_page(
        self,
        limit: int,
        after: str | None,
        order: str,
        *,
        anchor_of: Callable[[str], Find],
        not_found: str,
        page_of: Callable[[str | None, Order, int], Find],
        parse: Callable[[Any], _T],
        owner: str,
    ) -> Page[_T]:
        """One page of threads or items: the arguments checked, the ``after`` element's
        sort key looked up (``NotFoundError`` if it is gone), then one index range.

        Documents ``owner`` cannot read (see ``Persistence.unseal``) are left out as if
        absent: the range then continues after the last one read, until the page is
        full or the range ends, so ``has_more`` and ``after`` stay exact. Without such
        documents (always, with encryption off) that is the one range.
        """
        limit = check_limit(limit, self.max_page_size)
        direction = check_order(order)
        after = check_optional_id(after, "after")
        anchor = None
        if after is not None:
            anchor = await self._anchor(anchor_of(after), not_found.format(after=after))
        readable: list[dict[str, Any]] = []
        size = limit
        while True:
            find = page_of(anchor, direction, size)
            documents = await self.persistence.find_page(find)
            readable += await self.persistence.unseal_page(owner, documents)
            if len(readable) > limit or len(documents) < find.limit:
                break
            anchor = documents[-1][Field.SORT_KEY]
            # Why growing: a range of many unreadable documents (an owner whose key was
            # shredded before the purge finished) costs a few round trips, not one each.
            size = min(max(limit - len(readable), 2 * size), self.max_page_size)
        has_more = len(readable) > limit
        data = [parse(element) for element in readable[:limit]]
        return Page(data=data, has_more=has_more, after=_last_id(data) if has_more else None)


def _engine(
    encryption: Encryption | OwnerEncryption | None, database: AsyncDatabaseLike
) -> OwnerEncryption | None:
    """The encryption engine of a store, None without encryption.

    From settings: a new engine on the store's own client, which also reaches the key
    vault, decoding decrypted content with the database's codec options so that it reads
    back exactly as unencrypted content does.

    Why an engine is also taken as it is: it is the public seam between the store and
    the engine's driver calls. Stores built per request or per tenant over one client
    share one engine, its key cache and its libmongocrypt handle, instead of each opening
    its own (and each needing a close); and a test builds the engine on a wrapped
    explicit-encryption object (``OwnerEncryption(client_encryption=...)``) to inject
    faults and cancellations where an owner's first write creates its key, without
    touching the store's or the engine's internals.
    """
    if encryption is None:
        return None
    # Why imported here: the engine loads libmongocrypt's bindings and Motor, which a
    # store without encryption should not pay for (see Persistence's import).
    from ._encryption import OwnerEncryption  # noqa: PLC0415

    if isinstance(encryption, OwnerEncryption):
        return encryption
    if not isinstance(encryption, Encryption):
        raise TypeError(
            "encryption must be chatkit_mongo.Encryption settings or an OwnerEncryption "
            f"engine, not {type(encryption).__name__}"
        )
    handle: Any = database  # PyMongo's and Motor's databases have codec_options; the engine
    # refuses any other client (the in-process doubles cannot run a key vault)
    return OwnerEncryption(encryption, database.client, codec_options=handle.codec_options)


def _keyword_options(cls: type) -> frozenset[str]:
    """The keyword-only parameters of ``cls.__init__``: the store's own options."""
    parameters = inspect.signature(cls).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _metadata_only(thread: ThreadMetadata) -> ThreadMetadata:
    """A ``Thread`` (metadata plus a page of items) reduced to its metadata."""
    if type(thread) is ThreadMetadata:
        return thread
    return ThreadMetadata(**{name: getattr(thread, name) for name in ThreadMetadata.model_fields})


def _document(
    key: dict[str, Any], created_at: datetime, element_id: str, dumped: Dumped, what: str
) -> dict[str, Any]:
    """A thread's or item's stored fields, checked: its key, its timing, its model's
    dump under ``data``; :class:`~chatkit_mongo.UnstorableError` naming ``what`` if
    MongoDB would refuse it or it would not read back.

    Built as one dict, with ``created_at`` made naive UTC once: every write pays this.
    Why the check is made here, where the document is built: the check of a proved dump
    counts on :data:`~chatkit_mongo.schema.ENVELOPE_BYTES`, the worst case of exactly
    these fields, with ``key`` holding the owner :meth:`Persistence.begin
    <chatkit_mongo._persistence.Persistence.begin>` resolved and ids :func:`check_id`
    accepted (their lengths).
    """
    naive = created_at if created_at.tzinfo is None else utc_naive(created_at)
    document = {
        **key,
        Field.SORT_KEY: sort_key(naive, element_id),
        Field.CREATED_AT: naive,
        Field.DATA: dumped[0],
    }
    check_document(document, what, dumped, envelope=ENVELOPE_BYTES)
    return document


def _last_id(data: list[Any]) -> str | None:
    return str(data[-1].id) if data else None
