"""MongoDB persistence for OpenAI ChatKit servers."""

from .attachments import Download, GridFSAttachmentStore, SweepReport, UploadData
from .errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    ChatKitMongoError,
    IncompleteUploadError,
    IndexConflictError,
    ItemConflictError,
    OwnerError,
    UnstorableError,
    UploadConflictError,
)
from .indexes import IndexStatus, ensure_indexes, plan_indexes
from .maintenance import PurgeCounts, purge_inactive, purge_owner
from .owner import OwnerResolver, default_owner
from .schema import INDEXES, CollectionNames, Field, GridFSField, IndexSpec, UploadField
from .store import MongoStore
from .transfer import ImportCounts, ImportFileError, export_data, import_data

__all__ = [
    "INDEXES",
    "AttachmentTooLargeError",
    "AttachmentTypeError",
    "ChatKitMongoError",
    "CollectionNames",
    "Download",
    "Field",
    "GridFSAttachmentStore",
    "GridFSField",
    "ImportCounts",
    "ImportFileError",
    "IncompleteUploadError",
    "IndexConflictError",
    "IndexSpec",
    "IndexStatus",
    "ItemConflictError",
    "MongoStore",
    "OwnerError",
    "OwnerResolver",
    "PurgeCounts",
    "SweepReport",
    "UnstorableError",
    "UploadConflictError",
    "UploadData",
    "UploadField",
    "default_owner",
    "ensure_indexes",
    "export_data",
    "import_data",
    "plan_indexes",
    "purge_inactive",
    "purge_owner",
]
