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
from .retention import Retention
from .schema import (
    INDEXES,
    RETENTION_INDEXES,
    CollectionNames,
    Field,
    GridFSField,
    IndexSpec,
    UploadField,
    index_specs,
)
from .store import MongoStore
from .transfer import ImportCounts, ImportFileError, export_data, import_data

__all__ = [
    "INDEXES",
    "RETENTION_INDEXES",
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
    "Retention",
    "SweepReport",
    "UnstorableError",
    "UploadConflictError",
    "UploadData",
    "UploadField",
    "default_owner",
    "ensure_indexes",
    "export_data",
    "import_data",
    "index_specs",
    "plan_indexes",
    "purge_inactive",
    "purge_owner",
]
