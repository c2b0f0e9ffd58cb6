"""Errors raised by chatkit-mongo.

Missing threads, items and attachments raise ChatKit's own
:class:`chatkit.store.NotFoundError`, so a ChatKit server handles them as it does for
any store. Everything else derives from :class:`ChatKitMongoError`; the ones caused by
bad input are also :class:`ValueError`, so generic handlers keep working.
"""

from __future__ import annotations

from chatkit.store import NotFoundError


class ChatKitMongoError(Exception):
    """Base class of every error this package raises on its own."""


class OwnerError(ChatKitMongoError, ValueError):
    """The request context does not name an owner, so no data may be touched."""


class ConflictError(ChatKitMongoError, ValueError):
    """A write conflicts with what is stored; what is stored stays as it was."""


class ItemConflictError(ConflictError):
    """``add_thread_item`` met a different item already stored under the same id."""


class UnstorableError(ChatKitMongoError, ValueError):
    """A thread, item or attachment cannot be stored as it is; nothing was written.

    Too large for a MongoDB document, an integer past int64, nesting past MongoDB's
    limit, or a value that would not read back equal to what was saved.
    """


class UnreadableDocumentError(ChatKitMongoError, NotFoundError):
    """A stored thread, item or attachment that the running ChatKit release cannot read:
    written by a newer release (an item type this one does not know), edited by hand, or
    cut short. Raised by ``load_thread``, ``load_item`` and ``load_attachment``, and by a
    write that would replace such a document (nothing is written then); pages skip it.

    Why also ChatKit's ``NotFoundError``: a ChatKit server and the applications around
    it already answer a missing element cleanly (an HTTP 404, an error event), and to this
    release the element is as good as absent. The document itself stays as it is stored,
    for a release that can read it. ``collection``, ``document_id`` and ``reason`` (the
    first validation error) name what cannot be read and why.
    """

    def __init__(self, collection: str, document_id: str, reason: str) -> None:
        # Why the three as args: the error then pickles and copies as it was raised.
        super().__init__(collection, document_id, reason)
        self.collection = collection
        self.document_id = document_id
        self.reason = reason

    def __str__(self) -> str:
        return (
            f"the document {self.document_id!r} of {self.collection} cannot be read by this "
            f"release of ChatKit: {self.reason}"
        )


class StoreClosedError(ChatKitMongoError, RuntimeError):
    """The store closed the client it made (:meth:`MongoStore.close`); it takes no more calls."""


class IndexConflictError(ChatKitMongoError):
    """An existing index blocks one the store needs (same keys or name, other options)."""


class AttachmentTooLargeError(ChatKitMongoError, ValueError):
    """An attachment's bytes exceed ``max_bytes`` or the size declared at creation.

    Nothing of the upload is kept. HTTP routes answer 413.
    """


class AttachmentTypeError(ChatKitMongoError, ValueError):
    """An attachment's MIME type is not among the allowed ones. HTTP routes answer 415."""


class UploadConflictError(ConflictError):
    """The attachment already has its bytes, or another upload of them is under way.

    Bytes are written once: a second upload is refused, never merged. HTTP routes answer 409.
    """


class IncompleteUploadError(ChatKitMongoError, ValueError):
    """Fewer bytes arrived than the size declared at creation; nothing of them is kept."""


class EncryptionConfigError(ChatKitMongoError, ValueError):
    """The encryption settings cannot work: a master key missing, short or not decodable,
    an unknown KMS provider, or a malformed key vault namespace. Nothing was encrypted."""


class CiphertextError(ChatKitMongoError):
    """Encrypted content failed its integrity check: altered, truncated, reordered, spliced
    from another file, or not in chatkit-mongo's format; or, in a store whose encryption
    is strict (:attr:`Encryption.strict <chatkit_mongo.encryption.Encryption.strict>`),
    content stored in the clear. No unauthenticated byte of it is ever returned."""


class MasterKeyError(EncryptionConfigError):
    """The master key does not open this key vault's data keys: another master key (or
    another key vault) than the one the content was written with. Raised on reads and
    writes alike, before anything is returned or written; the message names where the
    master key came from (a file, an environment variable, a KMS provider)."""


class KeyUnavailableError(ChatKitMongoError):
    """Encrypted bytes cannot be read for this owner: the owner's data key is gone
    (shredded), or they were made with another owner's key. The store reports such
    content as not found."""


class ImportFileError(ChatKitMongoError, ValueError):
    """A line of an import file cannot be imported; nothing was written."""
