"""MongoDB persistence for OpenAI ChatKit servers."""

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
    OwnerError,
    StoreClosedError,
    UnstorableError,
    UploadConflictError,
)
from .operations.erase import PurgeCounts, purge_inactive, purge_owner
from .operations.indexes import IndexStatus, ensure_indexes, plan_indexes
from .operations.transfer import ImportCounts, export_data, import_data
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

__all__ = [
    "INDEXES",
    "RETENTION_INDEXES",
    "AttachmentTooLargeError",
    "AttachmentTypeError",
    "ChatKitMongoError",
    "CiphertextError",
    "CollectionNames",
    "ConflictError",
    "Download",
    "Encryption",
    "EncryptionConfigError",
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
    "KeyUnavailableError",
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
    "UploadField",
    "default_owner",
    "ensure_indexes",
    "export_data",
    "generate_local_master_key",
    "import_data",
    "index_specs",
    "plan_indexes",
    "purge_inactive",
    "purge_owner",
]
