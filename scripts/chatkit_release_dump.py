"""Run by ``scripts/chatkit_fixtures.py`` with the Python of a throwaway virtualenv that
has one ChatKit release installed (and nothing of chatkit-mongo): reads candidate
elements as JSON on standard input, prints that release's stored form of each.

Why candidates from outside: one set of elements, the current test samples (a thread,
every item kind, both attachment kinds), is given to every release. Each release
validates a candidate with its own models, ignoring fields it does not have, and dumps
it with ``model_dump(mode="json")``: exactly the ``data`` sub-document chatkit-mongo
stores. A candidate of an item or attachment type the release does not have yet is
left out; one of a type it has must validate, or this fails loudly.

Only the standard library, pydantic and chatkit: it runs under every release.
"""

from __future__ import annotations

import json
import sys
import typing
from importlib.metadata import version
from typing import Any

from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from pydantic import BaseModel, TypeAdapter


def _tags(union: Any) -> set[str]:
    """The ``type`` values of a discriminated union's models (``Annotated[A | B, ...]``)."""
    members = typing.get_args(typing.get_args(union)[0])
    models: list[type[BaseModel]] = [m for m in members if isinstance(m, type)]
    return {str(model.model_fields["type"].default) for model in models}


def main() -> None:
    candidates: list[dict[str, Any]] = json.load(sys.stdin)
    unions = {"item": ThreadItem, "attachment": Attachment}
    known = {kind: _tags(union) for kind, union in unions.items()}
    adapters: dict[str, TypeAdapter[Any]] = {
        "thread": TypeAdapter(ThreadMetadata),
        "item": TypeAdapter(ThreadItem),
        "attachment": TypeAdapter(Attachment),
    }
    documents = []
    for candidate in candidates:
        kind, data = candidate["kind"], candidate["data"]
        if kind in known and data["type"] not in known[kind]:
            continue  # a type a later release added
        model = adapters[kind].validate_python(data)
        documents.append({"kind": kind, "data": model.model_dump(mode="json")})
    json.dump({"chatkit": version("openai-chatkit"), "documents": documents}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
