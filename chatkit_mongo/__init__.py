"""MongoDB persistence for OpenAI ChatKit servers."""

from .errors import (
    ChatKitMongoError,
    IndexConflictError,
    ItemConflictError,
    OwnerError,
    UnstorableError,
)
from .indexes import IndexStatus, ensure_indexes, plan_indexes
from .owner import OwnerResolver, default_owner
from .schema import INDEXES, CollectionNames, Field, IndexSpec
from .store import MongoStore

__all__ = [
    "INDEXES",
    "ChatKitMongoError",
    "CollectionNames",
    "Field",
    "IndexConflictError",
    "IndexSpec",
    "IndexStatus",
    "ItemConflictError",
    "MongoStore",
    "OwnerError",
    "OwnerResolver",
    "UnstorableError",
    "default_owner",
    "ensure_indexes",
    "plan_indexes",
]
