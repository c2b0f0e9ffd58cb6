"""The embedded in-memory backend: MongoDB's API without a MongoDB server.

Why: the demo server and the benchmark should run in one command on a machine with no
database. mongomock-motor gives a Motor-shaped database held in this process, which
``MongoStore`` drives like any other; its data is gone when the process ends. It is a
stand-in for trying things out, not a database: it keeps no data, scans collections
instead of using indexes, and cannot ``explain()`` a query.

Why mongomock-motor is imported only when the backend is opened: ``serve`` and ``bench``
on a real server (``--uri``), and every ``--help``, must work without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from ._extras import missing_extra

EMBEDDED_DATABASE: Final = "chatkit"
EMBEDDED_EXTRA: Final = "demo"
"""The extra that installs mongomock-motor for the embedded backend (``bench`` has it too)."""


@contextmanager
def embedded_database(name: str = EMBEDDED_DATABASE) -> Iterator[Any]:
    """An empty in-memory database, usable by ``MongoStore`` and by GridFS while open.

    Why a context manager: GridFS over mongomock-motor works only while its GridFS
    integration is switched on, so it stays on exactly as long as the database is used.
    Without mongomock-motor installed: a one-line :class:`click.ClickException` saying
    how to install it, or to pass ``--uri``.
    """
    try:
        import mongomock_motor  # noqa: PLC0415  (see the module docstring)
    except ImportError as exc:
        raise missing_extra(
            "the embedded in-memory backend (used when no --uri is given)", EMBEDDED_EXTRA, exc
        ) from exc
    with mongomock_motor.enabled_gridfs_integration():
        yield mongomock_motor.AsyncMongoMockClient()[name]
