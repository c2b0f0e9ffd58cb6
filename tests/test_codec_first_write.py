"""A cold store's first write of each model finds its classes built.

Pydantic builds a model class lazily, at its first use, when it could not at definition
(1 to 2.5 ms each for ChatKit's deferred classes): that build would land on the first
request that writes the model, holding the event loop meanwhile. The codec builds every
class the store writes when it is imported. Checked in a fresh interpreter, where
nothing has been built but what importing the package builds.

How long a cold store's first write of each model holds the loop is a figure the
benchmark prints (``chatkit-mongo bench``, its cold phase), not a timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Final

_SCRIPT: Final = """
import json
import chatkit_mongo
from chatkit_mongo._codec import STORED_MODELS

print(json.dumps({
    "models": [model.__name__ for model in STORED_MODELS],
    "unbuilt": [model.__name__ for model in STORED_MODELS if not model.__pydantic_complete__],
}))
"""


def test_importing_the_package_builds_every_model_class_the_store_writes() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(result.stdout)
    assert {"ThreadMetadata", "UserMessageItem", "FileAttachment"} <= set(report["models"])
    assert report["unbuilt"] == [], "classes pydantic would build at their first use"
