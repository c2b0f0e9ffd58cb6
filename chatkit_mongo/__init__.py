"""MongoDB persistence for OpenAI ChatKit servers.

The public API: the two stores, their options and errors, the data-lifecycle calls
(purge, export, import), and client-side encryption: its settings (:class:`Encryption`,
with :func:`generate_local_master_key` for the ``local`` provider), the engine stores may
share (:class:`OwnerEncryption`) and its errors. The stored layout (field names, index
and shard-key specs, the registry of document kinds) is documented in
:mod:`chatkit_mongo.schema`; operations (indexes, sharding, doctor) live in
:mod:`chatkit_mongo.operations`; the CLI, the demo and the benchmark in
:mod:`chatkit_mongo.apps`. Encryption's key vault index, cache lifetime and format
constants stay in :mod:`chatkit_mongo.encryption`.
"""

from typing import TYPE_CHECKING

from ._driver import AsyncDatabaseLike
from ._readable import SkippedDocument, UnreadableDocuments
from ._telemetry import Telemetry
from .attachments import Download, GridFSAttachmentStore, SweepReport, UploadData
from .encryption import Encryption, generate_local_master_key
from .errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    ChatKitMongoError,
    CiphertextError,
    ConflictError,
    EncryptionConfigError,
    ImportFileError,
    IncompleteUploadError,
    IndexConflictError,
    ItemConflictError,
    KeyUnavailableError,
    MasterKeyError,
    OwnerError,
    StoreClosedError,
    UnreadableDocumentError,
    UnstorableError,
    UploadConflictError,
)
from .operations.erase import PurgeCounts, purge_inactive, purge_owner
from .operations.transfer import ImportCounts, export_data, import_data
from .owner import OwnerResolver, default_owner
from .retention import Retention
from .schema import CollectionNames
from .store import MongoStore

if TYPE_CHECKING:
    from ._encryption import OwnerEncryption


def __getattr__(name: str) -> object:
    """``OwnerEncryption``, imported on first use.

    Why lazily: the engine loads libmongocrypt's bindings and Motor (about 0.4 s), which
    an application without encryption, and the CLI's ``--help``, should not pay for.
    """
    if name == "OwnerEncryption":
        from ._encryption import OwnerEncryption  # noqa: PLC0415

        return OwnerEncryption
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyncDatabaseLike",
    "AttachmentTooLargeError",
    "AttachmentTypeError",
    "ChatKitMongoError",
    "CiphertextError",
    "CollectionNames",
    "ConflictError",
    "Download",
    "Encryption",
    "EncryptionConfigError",
    "GridFSAttachmentStore",
    "ImportCounts",
    "ImportFileError",
    "IncompleteUploadError",
    "IndexConflictError",
    "ItemConflictError",
    "KeyUnavailableError",
    "MasterKeyError",
    "MongoStore",
    "OwnerEncryption",
    "OwnerError",
    "OwnerResolver",
    "PurgeCounts",
    "Retention",
    "SkippedDocument",
    "StoreClosedError",
    "SweepReport",
    "Telemetry",
    "UnreadableDocumentError",
    "UnreadableDocuments",
    "UnstorableError",
    "UploadConflictError",
    "UploadData",
    "default_owner",
    "export_data",
    "generate_local_master_key",
    "import_data",
    "purge_inactive",
    "purge_owner",
]
