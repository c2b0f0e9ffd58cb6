"""The embedded in-memory backend: MongoDB's API without a MongoDB server.

Why: the demo server and the benchmark should run in one command on a machine with no
database. mongomock-motor gives a Motor-shaped database held in this process, which
``MongoStore`` drives like any other; its data is gone when the process ends. It is a
stand-in for trying things out, not a database: it keeps no data, scans collections
instead of using indexes, and cannot ``explain()`` a query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import mongomock_motor

EMBEDDED_DATABASE: Final = "chatkit"


@contextmanager
def embedded_database(name: str = EMBEDDED_DATABASE) -> Iterator[Any]:
    """An empty in-memory database, usable by ``MongoStore`` and by GridFS while open.

    Why a context manager: GridFS over mongomock-motor works only while its GridFS
    integration is switched on, so it stays on exactly as long as the database is used.
    """
    with mongomock_motor.enabled_gridfs_integration():
        yield mongomock_motor.AsyncMongoMockClient()[name]
