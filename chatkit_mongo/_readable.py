"""Reading stored content with the running ChatKit release, and what it cannot read.

ChatKit's types change between releases, and deployments upgrade and roll back one
instance at a time, so one collection holds documents of several releases. A document
this release cannot validate (an item type a newer release wrote, a field edited by
hand, a document cut short) must not take a whole page down with it: pages skip it and
report the skip here, single loads raise :class:`~chatkit_mongo.UnreadableDocumentError`.

Why the parse functions of :mod:`chatkit_mongo._codec` are wrapped here rather than
changed: they are the validation the write side's round-trip check runs too, and the
hot path of every page; the wrapper costs a ``try`` where they are called and nothing
else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from .errors import UnreadableDocumentError

_T = TypeVar("_T")

logger: Final = logging.getLogger("chatkit_mongo")
"""Where each skip is logged, at WARNING: one line naming the collection, the id and
the first validation error."""


@dataclass(frozen=True)
class SkippedDocument:
    """One document a page left out because this ChatKit release cannot read it."""

    collection: str
    """The collection's name (``chatkit_items`` by default)."""
    document_id: str
    """The thread's or item's id, as stored."""
    reason: str
    """The first validation error: where in the document, and what is wrong there."""


SkipHook = Callable[[SkippedDocument], None]
"""Called once for each skipped document, after it is counted and logged."""


class UnreadableDocuments:
    """Counts the documents pages skipped, per collection, and tells the hooks of each.

    A store makes its own (``MongoStore.unreadable``); pass one to several stores
    (``MongoStore(..., unreadable=counter)``) to count for all of them in one place, as
    an application building a store per request or per tenant would. Each skip is
    reported once: a page reports those inside its own range only, so reading a
    conversation page by page reports each unreadable document once per reading.
    """

    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}
        """Skipped documents so far, per collection name."""
        self._hooks: list[SkipHook] = []

    @property
    def total(self) -> int:
        """Skipped documents so far, in every collection."""
        return sum(self.skipped.values())

    def add_hook(self, hook: SkipHook) -> None:
        """Call ``hook`` with each :class:`SkippedDocument` from now on (for metrics).

        A hook that raises does not fail the page: its error is logged and the next
        hook runs. Why: a page the user waits for must not depend on a metrics exporter.
        """
        self._hooks.append(hook)

    def record(self, skipped: SkippedDocument) -> None:
        """Count, log and tell the hooks of one skipped document."""
        self.skipped[skipped.collection] = self.skipped.get(skipped.collection, 0) + 1
        logger.warning(
            "skipped a document this ChatKit release cannot read: collection %s, id %r: %s",
            skipped.collection,
            skipped.document_id,
            skipped.reason,
        )
        for hook in self._hooks:
            try:
                hook(skipped)
            except Exception:  # any hook failure is the hook's, never the page's
                logger.exception("a hook of UnreadableDocuments failed")


def first_error(exc: ValidationError) -> str:
    """The first of a validation's errors, in one line: its location and its message."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)
    error = errors[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}" if location else str(error["msg"])


def read(parse: Callable[[Any], _T], data: Any, collection: str, document_id: str) -> _T:
    """``parse(data)``, or :class:`~chatkit_mongo.UnreadableDocumentError` naming the
    document and the first validation error, never a bare ``ValidationError``."""
    try:
        return parse(data)
    except ValidationError as exc:
        raise UnreadableDocumentError(collection, document_id, first_error(exc)) from exc


def unknown_fields(stored: dict[str, Any], dumped: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields of ``stored`` content that ``dumped`` (this release's dump of
    the model being written) does not have: fields a newer release added. None when the
    two are of different types (an item replaced by another kind of item): the stored
    fields are then the old kind's, not unknown ones of the same.

    Why a write keeps them: an older instance saving a thread it read (pydantic ignores
    fields it does not know) would otherwise erase what the newer release wrote there.
    """
    if stored.get("type") != dumped.get("type"):
        return {}
    return {name: value for name, value in stored.items() if name not in dumped}
