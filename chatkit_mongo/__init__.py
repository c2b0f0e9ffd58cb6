"""MongoDB persistence for OpenAI ChatKit servers.

The public API: the two stores, their options and errors, and the data-lifecycle calls
(purge, export, import). The stored layout (field names, index and shard-key specs, the
registry of document kinds) is documented in :mod:`chatkit_mongo.schema`; operations
(indexes, sharding, doctor) live in :mod:`chatkit_mongo.operations`; the CLI, the demo
and the benchmark in :mod:`chatkit_mongo.apps`. Client-side encryption
(:mod:`chatkit_mongo.encryption`) joins the root once the stores take it: until then its
engine is importable from that module alone, so the root promises nothing it cannot do.
"""

from ._driver import AsyncDatabaseLike
from .attachments import Download, GridFSAttachmentStore, SweepReport, UploadData
from .errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    ChatKitMongoError,
    ConflictError,
    ImportFileError,
    IncompleteUploadError,
    IndexConflictError,
    ItemConflictError,
    OwnerError,
    StoreClosedError,
    UnstorableError,
    UploadConflictError,
)
from .operations.erase import PurgeCounts, purge_inactive, purge_owner
from .operations.transfer import ImportCounts, export_data, import_data
from .owner import OwnerResolver, default_owner
from .retention import Retention
from .schema import CollectionNames
from .store import MongoStore

__all__ = [
    "AsyncDatabaseLike",
    "AttachmentTooLargeError",
    "AttachmentTypeError",
    "ChatKitMongoError",
    "CollectionNames",
    "ConflictError",
    "Download",
    "GridFSAttachmentStore",
    "ImportCounts",
    "ImportFileError",
    "IncompleteUploadError",
    "IndexConflictError",
    "ItemConflictError",
    "MongoStore",
    "OwnerError",
    "OwnerResolver",
    "PurgeCounts",
    "Retention",
    "StoreClosedError",
    "SweepReport",
    "UnstorableError",
    "UploadConflictError",
    "UploadData",
    "default_owner",
    "export_data",
    "import_data",
    "purge_inactive",
    "purge_owner",
]
