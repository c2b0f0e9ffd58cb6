"""Export and import: what the store accepts comes back exactly; a bad line is named.

- Any metadata the store accepts, made of every key Extended JSON and BSON give a
  meaning ($oid, $date, $numberLong, $binary, $uuid, $regularExpression, $timestamp,
  $minKey, $code, $ref/$id/$db...) with payloads of right and wrong shape, survives
  export then import byte for byte, and loads back equal through the store; every
  export imports. (Generated; on the doubles and through both real drivers on the server.)
- Such objects written raw (as types, not escaped user keys) into any field of a line,
  ids and references included, either import as valid values of that field's type or
  are refused naming the line, with nothing written; never a traceback.
- Bytes that are not UTF-8 anywhere in a line are refused naming the line.
- A line BSON or the server would refuse (an integer past int64, NUL in a key, a lone
  surrogate, nesting past 100 levels, over 16 MiB) is refused before the first write.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any, Final

import pytest
from bson import ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from chatkit.types import ClientToolCallItem, FileAttachment, ThreadMetadata
from hypothesis import given, settings
from hypothesis import strategies as st

from chatkit_mongo import UnstorableError
from chatkit_mongo.operations.transfer import FORMAT
from chatkit_mongo.schema import Field, GridFSField, UploadField, is_file_id, owner_file_id

from .cli_support import all_documents, encoded, invoke, run, seed
from .conftest import BACKENDS, NAMES, RequestContext
from .samples import BASE_TIME, tool_call
from .strategies import (
    StoreRunner,
    examples,
    json_values,
    special_metadata,
    special_objects,
)

ALICE: Final = RequestContext("alice")


def _save_all(runner: StoreRunner, extra: dict[str, Any]) -> bool:
    """A thread, an item and an attachment holding ``extra``; False if the store refuses."""
    store = runner.store
    try:
        runner.run(
            store.save_thread(
                ThreadMetadata(id="thr_x", created_at=BASE_TIME, metadata=extra), ALICE
            )
        )
        item = tool_call("tc_x", "thr_x", extra)
        runner.run(store.add_thread_item("thr_x", item, ALICE))
        attachment = FileAttachment(id="atc_x", name="a", mime_type="text/plain", metadata=extra)
        runner.run(store.save_attachment(attachment, ALICE))
    except UnstorableError:
        return False
    return True


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=examples(40))
@given(extra=special_metadata)
def test_anything_the_store_accepts_survives_export_and_import_exactly(
    backend: str, extra: dict[str, Any]
) -> None:
    source, target = StoreRunner(backend), StoreRunner(backend)
    try:
        if not _save_all(source, extra):
            return  # refused by the store (a DBRef shape): nothing to export
        with tempfile.TemporaryDirectory() as directory:
            out = Path(directory) / "all.jsonl"
            exported = invoke(backend, source.database, "export", "--out", str(out))
            assert exported.exit_code == 0, exported.output
            imported = invoke(backend, target.database, "import", str(out))
            assert imported.exit_code == 0, imported.output
        assert encoded(target.run(all_documents(target.database))) == encoded(
            source.run(all_documents(source.database))
        )
        loaded = target.run(target.store.load_thread("thr_x", ALICE))
        assert loaded.metadata == extra
        item = target.run(target.store.load_item("thr_x", "tc_x", ALICE))
        assert isinstance(item, ClientToolCallItem)
        assert item.arguments == extra
        assert target.run(target.store.load_attachment("atc_x", ALICE)).metadata == extra
    finally:
        source.close()
        target.close()


def _line(kind: str, document_json: str, fmt: int | None) -> str:
    marker = "" if fmt is None else f', "format": {fmt}'
    return f'{{"kind": "{kind}"{marker}, "document": {document_json}}}\n'


_THREAD_DATA: Final = json.dumps(
    ThreadMetadata(id="thr_x", created_at=BASE_TIME).model_dump(mode="json")
)
_FILE_ID: Final = str(ObjectId())
_EMPTY: Final = '{"$binary": {"base64": "", "subType": "00"}}'
_ATTACHMENT_DATA: Final = json.dumps(
    FileAttachment(id="a", name="a", mime_type="text/plain").model_dump(mode="json")
)
_POSITIONS: Final = {
    "metadata value": (
        "thread",
        '{"owner": "alice", "thread_id": "thr_x", "sk": "1", "data": '
        + _THREAD_DATA[:-1]
        + ', "metadata": {"v": @}}}',
    ),
    "thread _id": ("thread", '{"_id": @, "owner": "alice", "thread_id": "thr_x", "data": '
                   + _THREAD_DATA + "}"),
    "owner": ("thread", '{"owner": @, "thread_id": "thr_x", "data": ' + _THREAD_DATA + "}"),
    "file _id": ("file", '{"_id": @, "metadata": {"owner": "alice", "attachment_id": "a"}}'),
    "files_id": ("chunk", '{"files_id": @, "n": 0, "data": ' + _EMPTY + "}"),
    "n": ("chunk", '{"files_id": {"$oid": "' + _FILE_ID + '"}, "n": @, "data": ' + _EMPTY + "}"),
    "file_id": (
        "attachment",
        '{"owner": "alice", "attachment_id": "a", "file_id": @, "data": '
        + _ATTACHMENT_DATA
        + "}",
    ),
}  # fmt: skip
"""Where a raw value goes: ``@`` in a document of that kind."""
_FILE_LINE: Final = _line(
    "file",
    '{"_id": {"$oid": "' + _FILE_ID + '"}, "metadata": {"owner": "alice", "attachment_id": "a"}}',
    FORMAT,
)


@settings(max_examples=examples(150))
@given(
    value=special_objects | json_values,
    position=st.sampled_from(sorted(_POSITIONS)),
    fmt=st.sampled_from([None, FORMAT]),
)
def test_any_raw_value_in_any_field_imports_as_its_type_or_is_refused_by_line(
    value: Any, position: str, fmt: int | None
) -> None:
    kind, template = _POSITIONS[position]
    raw = json.dumps(value)
    runner = StoreRunner("pymongo-mock")
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "in.jsonl"
            path.write_text(_FILE_LINE + _line(kind, template.replace("@", raw), fmt))
            result = invoke("pymongo-mock", runner.database, "import", str(path))
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        stored = runner.run(all_documents(runner.database))
        if result.exit_code != 0:
            assert result.output.startswith("Error: line "), result.output
            assert not any(stored.values())
            return
        document = next(d for found in stored.values() for d in found if kind != "chunk" or
                        GridFSField.FILES_ID in d)  # fmt: skip
        if position == "thread _id":
            assert type(document["_id"]) is ObjectId
        if position == "file _id":
            assert is_file_id(document["_id"])
        if position == "owner":
            assert isinstance(document[Field.OWNER], str)
        if position == "files_id":
            assert is_file_id(document[GridFSField.FILES_ID])
        if position == "n":
            assert isinstance(document[GridFSField.CHUNK_NUMBER], int)
            assert document[GridFSField.CHUNK_NUMBER] >= 0
        if position == "file_id":
            assert document.get(UploadField.FILE_ID) is None or is_file_id(
                document[UploadField.FILE_ID]
            )
    finally:
        runner.close()


_HEX_DIGITS: Final = "0123456789abcdefABCDEF"
file_id_candidates = st.one_of(
    st.builds(ObjectId),
    st.builds(owner_file_id, st.sampled_from(["alice", "bob", "alice/x", "alic", "alice "])),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["alice", "bob", "", "alice/alice"]),
        st.sampled_from(["/", "", "//", ":"]),
        st.text(_HEX_DIGITS, min_size=0, max_size=26),
    ),
    st.integers(-1, 2**40),
    st.none(),
    st.binary(max_size=12),
)
"""Values for a file id: the two shapes the store writes (for alice and for others), and
strings, numbers, bytes and nulls near them."""


@settings(max_examples=examples(150))
@given(file_id=file_id_candidates, fmt=st.sampled_from([None, FORMAT]))
def test_a_file_id_imports_exactly_when_it_is_a_shape_the_store_writes_for_its_owner(
    file_id: Any, fmt: int | None
) -> None:
    """A file line and alice's attachment referring to it: imported when the id is a bare
    ObjectId (files from before ids carried the owner) or ``alice/<lowercase ObjectId
    hex>``, refused by line otherwise (another owner's prefix above all)."""
    accepted = type(file_id) is ObjectId or (
        isinstance(file_id, str) and re.fullmatch(r"alice/[0-9a-f]{24}", file_id) is not None
    )
    file = {"_id": file_id, "metadata": {"owner": "alice", "attachment_id": "a"}}
    attachment = {
        "owner": "alice",
        "attachment_id": "a",
        "file_id": file_id,
        "data": json.loads(_ATTACHMENT_DATA),
    }
    chunk = {"files_id": file_id, "n": 0, "data": b""}
    runner = StoreRunner("pymongo-mock")
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "in.jsonl"
            path.write_text(
                "".join(
                    _line(kind, json_util.dumps(document, json_options=CANONICAL_JSON_OPTIONS), fmt)
                    for kind, document in (
                        ("file", file),
                        ("chunk", chunk),
                        ("attachment", attachment),
                    )
                )
            )
            result = invoke("pymongo-mock", runner.database, "import", str(path))
        stored = runner.run(all_documents(runner.database))
        if accepted:
            assert result.exit_code == 0, result.output
            assert [d["_id"] for d in stored[NAMES.bucket_files]] == [file_id]
            assert [d[UploadField.FILE_ID] for d in stored[NAMES.attachments]] == [file_id]
        else:
            assert result.exit_code == 1, result.output
            assert result.output.startswith("Error: line 1: "), result.output
            assert not any(stored.values())
    finally:
        runner.close()


async def _export(backend: str, database: Any, tmp_path: Path) -> list[bytes]:
    await seed(database, "alice", ["thr_a"], BASE_TIME)
    out = tmp_path / "alice.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    return out.read_bytes().splitlines(keepends=True)


@settings(max_examples=examples(40))
@given(
    bad=st.binary(min_size=1, max_size=4).filter(lambda b: not _is_utf8(b)),
    where=st.integers(0, 10_000),
)
def test_bytes_that_are_not_utf8_are_refused_naming_the_line(bad: bytes, where: int) -> None:
    runner = StoreRunner("pymongo-mock")
    try:
        with tempfile.TemporaryDirectory() as directory:
            lines = runner.run(_export("pymongo-mock", runner.database, Path(directory)))
            target = StoreRunner("pymongo-mock")
            try:
                number = where % len(lines)
                line = lines[number]
                at = where % len(line.rstrip(b"\n"))
                lines[number] = line[:at] + bad + line[at:]
                path = Path(directory) / "bad.jsonl"
                path.write_bytes(b"".join(lines))
                result = invoke("pymongo-mock", target.database, "import", str(path))
                assert result.exit_code == 1, result.output
                assert f"Error: line {number + 1}: not valid UTF-8" in result.output
                assert not any(target.run(all_documents(target.database)).values())
            finally:
                target.close()
    finally:
        runner.close()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _nested(depth: int) -> str:
    return '{"n": ' * (depth - 1) + "{}" + "}" * (depth - 1)


UNENCODABLE: Final[dict[str, tuple[str, str]]] = {
    "past int64": (str(2**63), "64-bit range"),
    "before int64": (str(-(2**63) - 1), "64-bit range"),
    "NUL in a key": ('{"a\\u0000b": 1}', "cannot be encoded as BSON"),
    "lone surrogate": ('"x\\ud800"', "lone surrogate"),
    "lone surrogate in a key": ('{"\\udc00": 1}', "lone surrogate"),
    "nested 101 deep": (_nested(100), "nested 101 levels deep"),
    "nested past the parser's recursion": (_nested(5000), "nested too deeply"),
    "over 16 MiB": ('"' + "x" * (16 * 1024 * 1024) + '"', "bytes as BSON"),
}
"""Raw JSON values for a top-level field of the last item line, and what the error says."""


@pytest.mark.parametrize("case", UNENCODABLE)
async def test_a_line_bson_cannot_hold_is_refused_before_any_write(
    backend: str, database: Any, empty_database: Any, tmp_path: Path, case: str
) -> None:
    """Regression: two thread documents were written, then the item line died with an
    OverflowError / InvalidDocument traceback."""
    raw, message = UNENCODABLE[case]
    lines = await _export(backend, database, tmp_path)
    number = max(n for n, line in enumerate(lines) if b'"kind": "item"' in line)
    lines[number] = lines[number].replace(
        b'"document": {', b'"document": {"extra": ' + raw.encode() + b", ", 1
    )
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(lines))

    result = await run(backend, empty_database, "import", str(path))

    assert result.exit_code == 1, result.output
    assert f"Error: line {number + 1}: " in result.output
    assert message in result.output
    assert not any((await all_documents(empty_database)).values())
