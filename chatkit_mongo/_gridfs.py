"""Whose GridFS bytes are whose: the one proof every delete of attachment bytes passes.

Why a proof at all: an attachment's ``file_id`` is a reference its owner's deletes
follow, and a reference can be wrong (an imported line, a document edited by hand). A
GridFS ``files`` document records its owner in ``metadata.owner``; the chunks record
nothing but their file's id. So an owner may erase a file's bytes when

- its id is an :func:`~chatkit_mongo.schema.owner_file_id` naming that owner (the id
  the attachment store writes now; no other owner's upload can make it), and its
  ``files`` document, if any, names that owner too; or
- its id is a bare ObjectId (a file uploaded before ids carried the owner), and its
  ``files`` document names that owner, or, while there is none (an upload killed
  mid-stream: the driver writes the ``files`` document last), no attachment of another
  owner refers to the id. A fresh ObjectId, chosen by the upload that claims it, is what
  makes such an id one attachment's alone.

Any other value is no file id the store writes, and erases nothing.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from .schema import Field, FileId, GridFSField, UploadField, file_id_owner


async def erasable_file_ids(
    files: Any, attachments: Any, owner: str, file_ids: list[Any]
) -> list[FileId]:
    """Those of ``file_ids`` whose bytes ``owner`` may delete (see the module docstring).

    One query on ``files`` by ``_id`` (routed by the ``files`` shard key). Only for a bare
    ObjectId without a ``files`` document, one more on the attachments by ``file_id``:
    no index serves it and it cannot carry the owner (it looks for the other owners), so
    it scans every shard; it is the rare path of an old release's cut-off upload, listed
    in :data:`chatkit_mongo.operations.sharding.SCATTERS`.
    """
    own = [
        file_id
        for file_id in file_ids
        if file_id_owner(file_id) == owner or type(file_id) is ObjectId
    ]
    if not own:
        return []
    owners: dict[Any, Any] = {}
    cursor = files.find({GridFSField.ID: {"$in": own}}, {GridFSField.METADATA: 1})
    async for file in cursor:
        owners[file[GridFSField.ID]] = (file.get(GridFSField.METADATA) or {}).get(Field.OWNER)
    legacy_without_file = [
        file_id for file_id in own if type(file_id) is ObjectId and file_id not in owners
    ]
    foreign: set[Any] = set()
    if legacy_without_file:
        others = attachments.find(
            {UploadField.FILE_ID: {"$in": legacy_without_file}, Field.OWNER: {"$ne": owner}},
            {UploadField.FILE_ID: 1},
        )
        foreign = {attachment[UploadField.FILE_ID] async for attachment in others}
    return [
        file_id for file_id in own if owners.get(file_id, owner) == owner and file_id not in foreign
    ]
