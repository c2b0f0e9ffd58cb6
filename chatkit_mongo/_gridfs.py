"""Whose GridFS bytes are whose: the one proof every delete of attachment bytes passes.

Why a proof at all: an attachment's ``file_id`` is a reference its owner's deletes
follow, and a reference can be wrong (an imported line, a document edited by hand). A
GridFS ``files`` document records its owner in ``metadata.owner``; the chunks record
nothing but their file's id. So an owner may erase a file's bytes when its ``files``
document names that owner, or, while there is none yet (an upload under way, or one
killed mid-stream: the driver writes the ``files`` document last), when no attachment
of another owner refers to the id. A fresh ObjectId, chosen by the upload that claims
it, is what makes such an id one attachment's alone.
"""

from __future__ import annotations

from typing import Any

from .schema import Field, GridFSField, UploadField


async def erasable_file_ids(
    files: Any, attachments: Any, owner: str, file_ids: list[Any]
) -> list[Any]:
    """Those of ``file_ids`` whose bytes ``owner`` may delete (see the module docstring).

    One query on ``files`` by ``_id``; only when some id has no ``files`` document, one
    more on the attachments by ``file_id`` (no index serves it: it is the rare path of a
    cut-off upload).
    """
    if not file_ids:
        return []
    owners: dict[Any, Any] = {}
    cursor = files.find({GridFSField.ID: {"$in": file_ids}}, {GridFSField.METADATA: 1})
    async for file in cursor:
        owners[file[GridFSField.ID]] = (file.get(GridFSField.METADATA) or {}).get(Field.OWNER)
    without_file = [file_id for file_id in file_ids if file_id not in owners]
    foreign: set[Any] = set()
    if without_file:
        others = attachments.find(
            {UploadField.FILE_ID: {"$in": without_file}, Field.OWNER: {"$ne": owner}},
            {UploadField.FILE_ID: 1},
        )
        foreign = {attachment[UploadField.FILE_ID] async for attachment in others}
    return [
        file_id
        for file_id in file_ids
        if owners.get(file_id, owner) == owner and file_id not in foreign
    ]
