"""Write the stored documents of ChatKit releases as test fixtures: one command per release.

    python scripts/chatkit_fixtures.py 1.6.5            # one release
    python scripts/chatkit_fixtures.py 1.0.2 1.2.0 1.6.4 1.6.5

For each release: a throwaway virtualenv (``python -m venv`` in a temporary directory),
``pip install openai-chatkit==RELEASE`` into it, then ``scripts/chatkit_release_dump.py``
run by that virtualenv's Python, given the current test samples (a thread, every item
kind, both attachment kinds: :func:`tests.samples.every_model`; threads of every status,
with a title, metadata and image domains: :func:`tests.samples.threads_for_variety`)
as candidates. What it
prints, each element as that release dumps it (the ``data`` chatkit-mongo stores), goes
to ``tests/fixtures/chatkit-RELEASE.json``; the virtualenv is deleted.
``tests/test_release_fixtures.py`` then loads every fixture file through the store on
every backend. Why a virtualenv per release: only that release's own models can say
what it wrote; chatkit-mongo itself is not installed there (it needs ChatKit 1.6).

Needs the network access pip has (the package index) and about a minute per release.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DUMPER = Path(__file__).resolve().parent / "chatkit_release_dump.py"


def candidates() -> str:
    """The current samples' dumps, as JSON: what every release is asked to store."""
    sys.path.insert(0, str(ROOT))
    from tests.samples import every_model, threads_for_variety  # noqa: PLC0415

    kinds = {"ThreadMetadata": "thread"}
    elements = []
    models = [model for model, _ in every_model()] + list(threads_for_variety())
    for model in models:
        name = type(model).__name__
        kind = kinds.get(name, "attachment" if name.endswith("Attachment") else "item")
        elements.append({"kind": kind, "data": model.model_dump(mode="json")})
    return json.dumps(elements)


def dump_release(release: str, elements: str) -> Path:
    """Install ``release`` in a throwaway virtualenv and write its fixture file."""
    with tempfile.TemporaryDirectory(prefix=f"chatkit-{release}-") as directory:
        venv = Path(directory) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-qq", f"openai-chatkit=={release}"],
            check=True,
        )
        printed = subprocess.run(
            [str(python), str(DUMPER)], input=elements, capture_output=True, text=True, check=True
        ).stdout
    target = FIXTURES / f"chatkit-{release}.json"
    FIXTURES.mkdir(exist_ok=True)
    target.write_text(printed, encoding="utf-8")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="+", help="openai-chatkit versions, e.g. 1.6.5")
    arguments = parser.parse_args()
    elements = candidates()
    for release in arguments.releases:
        target = dump_release(release, elements)
        kept = len(json.loads(target.read_text(encoding="utf-8"))["documents"])
        print(f"{target.relative_to(ROOT)}: {kept} documents")


if __name__ == "__main__":
    main()
