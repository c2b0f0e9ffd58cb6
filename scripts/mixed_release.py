"""The mixed-release test: the oldest supported ChatKit reads what the newest wrote.

    python scripts/mixed_release.py            # the oldest release pyproject.toml allows
    python scripts/mixed_release.py 1.6.2      # another one

Makes a throwaway virtualenv (``python -m venv`` in a temporary directory), installs this
repository into it with ``openai-chatkit==RELEASE`` and the embedded backend
(mongomock-motor), and runs ``scripts/mixed_release_check.py`` there: the newest
release's fixture file, read through the store by the older release, whose pages must
skip what it cannot read, not fail. ``make mixed-release-test`` runs this for CI.

Why a virtualenv: one process holds one ChatKit, and the deployments this protects run
the older release beside the newer one. Time-bounded: the install and the check each
stop after ``--timeout`` seconds (default 600) and fail.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = Path(__file__).resolve().parent / "mixed_release_check.py"
MONGOMOCK_MOTOR = "mongomock-motor==0.0.36"
"""As pinned in pyproject.toml's extras."""


def oldest_supported() -> str:
    """The lowest ``openai-chatkit`` pyproject.toml allows, as a full release (1.6 -> 1.6.0)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requirement = next(d for d in project["project"]["dependencies"] if "openai-chatkit" in d)
    lowest = re.search(r">=\s*([0-9.]+)", requirement)
    if lowest is None:
        raise SystemExit(f"no lower bound in {requirement!r}")
    parts = lowest[1].split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", nargs="?", default=None, help="default: the oldest supported")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per step")
    arguments = parser.parse_args()
    release = arguments.release or oldest_supported()
    with tempfile.TemporaryDirectory(prefix=f"chatkit-mixed-{release}-") as directory:
        venv = Path(directory) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        install = [python, "-m", "pip", "install", "-qq", str(ROOT), MONGOMOCK_MOTOR]
        subprocess.run(
            [*install, f"openai-chatkit=={release}"], check=True, timeout=arguments.timeout
        )
        # Why from the repository root: the check imports the fixtures' reader from tests/.
        subprocess.run([python, str(CHECK)], check=True, timeout=arguments.timeout, cwd=ROOT)


if __name__ == "__main__":
    main()
