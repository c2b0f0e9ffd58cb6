"""One error hierarchy: every error the library raises on purpose is a ChatKitMongoError,
keeps the stdlib base callers catch, and a bad owner is an OwnerError on every path."""

from __future__ import annotations

import io
from typing import Any

import pytest

from chatkit_mongo import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    ChatKitMongoError,
    ConflictError,
    ImportFileError,
    IncompleteUploadError,
    ItemConflictError,
    OwnerError,
    StoreClosedError,
    UnstorableError,
    UploadConflictError,
    export_data,
    purge_owner,
)

from .conftest import NAMES

BAD_OWNERS: list[Any] = ["", None, 7, "x" * 513, "\ud800"]


@pytest.mark.parametrize(
    ("error", "stdlib"),
    [
        (OwnerError, ValueError),
        (ItemConflictError, ValueError),
        (UploadConflictError, ValueError),
        (UnstorableError, ValueError),
        (AttachmentTooLargeError, ValueError),
        (AttachmentTypeError, ValueError),
        (IncompleteUploadError, ValueError),
        (ImportFileError, ValueError),
        (StoreClosedError, RuntimeError),
    ],
)
def test_each_error_is_the_librarys_and_keeps_its_stdlib_base(
    error: type[Exception], stdlib: type[Exception]
) -> None:
    assert issubclass(error, ChatKitMongoError)
    assert issubclass(error, stdlib)


def test_both_conflicts_share_one_base() -> None:
    assert issubclass(ItemConflictError, ConflictError)
    assert issubclass(UploadConflictError, ConflictError)


@pytest.mark.parametrize("owner", BAD_OWNERS)
async def test_purge_refuses_a_bad_owner_with_owner_error(database: Any, owner: Any) -> None:
    with pytest.raises(OwnerError, match="owner"):
        await purge_owner(database, NAMES, owner)


@pytest.mark.parametrize("owner", BAD_OWNERS[:1] + BAD_OWNERS[2:])  # None: everyone's
async def test_export_refuses_a_bad_owner_with_owner_error(database: Any, owner: Any) -> None:
    out = io.StringIO()
    with pytest.raises(OwnerError, match="owner"):
        await export_data(database, NAMES, out, owner=owner)
    assert out.getvalue() == ""
