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
from .owner import OwnerResolver, default_owner
from .schema import INDEXES, CollectionNames, Field, GridFSField, IndexSpec, UploadField
from .store import MongoStore

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
    "IncompleteUploadError",
    "IndexConflictError",
    "IndexSpec",
    "IndexStatus",
    "ItemConflictError",
    "MongoStore",
    "OwnerError",
    "OwnerResolver",
    "SweepReport",
    "UnstorableError",
    "UploadConflictError",
    "UploadData",
    "UploadField",
    "default_owner",
    "ensure_indexes",
    "plan_indexes",
]
