"""MongoDB persistence for OpenAI ChatKit servers."""

from .errors import (
    ChatKitMongoError,
    IndexConflictError,
    ItemConflictError,
    OwnerError,
    UnstorableError,
)
from .indexes import IndexStatus, ensure_indexes, plan_indexes
from .maintenance import PurgeCounts, purge_inactive, purge_owner
from .owner import OwnerResolver, default_owner
from .schema import INDEXES, CollectionNames, Field, FileField, IndexSpec
from .store import MongoStore
from .transfer import ImportCounts, ImportFileError, export_data, import_data

__all__ = [
    "INDEXES",
    "ChatKitMongoError",
    "CollectionNames",
    "Field",
    "FileField",
    "ImportCounts",
    "ImportFileError",
    "IndexConflictError",
    "IndexSpec",
    "IndexStatus",
    "ItemConflictError",
    "MongoStore",
    "OwnerError",
    "OwnerResolver",
    "PurgeCounts",
    "UnstorableError",
    "default_owner",
    "ensure_indexes",
    "export_data",
    "import_data",
    "plan_indexes",
    "purge_inactive",
    "purge_owner",
]
