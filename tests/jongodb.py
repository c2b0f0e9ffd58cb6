"""jongodb, the MongoDB-wire server the test suite starts itself: install and launch.

Why jongodb: no mongod installs on these machines, and jongodb (an in-memory
reimplementation of the wire protocol, shipped as a native binary inside an npm package)
does. It lets every ``make test`` drive the real drivers, PyMongo's ``AsyncMongoClient``
and Motor's ``AsyncIOMotorClient``, over a real socket. It is not mongod: what it lacks is
probed at the start of each session (``tests/capabilities.py``).

``python -m tests.jongodb`` is the install step ``make test`` runs: ``npm pack`` the
package through npm's configured registry, check the binary's sha256 (the one pinned
here, which the package's own ``package.json`` must also record), unpack it into the
ignored ``.cache/jongodb/<version>/``. Idempotent: an installed, intact binary is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Final

PACKAGE: Final = "@jongodb/memory-server-bin-linux-x64-gnu"
VERSION: Final = "0.1.6"
SHA256: Final = "c53888f078d7f5f38d5386685044cf54dd94aaf831ebc09c76f1d4fbc321b625"
"""The binary's sha256, as the package's ``package.json`` records it under ``jongodb``."""
ROOT: Final = Path(__file__).resolve().parent.parent
INSTALL_DIR: Final = ROOT / ".cache" / "jongodb" / VERSION
BINARY: Final = INSTALL_DIR / "bin" / "jongodb"
START_TIMEOUT: Final = 30.0
"""Seconds to wait for the server to print its URI: it is a native image, up in < 1 s."""


class JongodbError(RuntimeError):
    """jongodb could not be installed or started; the message says why."""


def in_ci() -> bool:
    """Under CI a missing wire server fails the run instead of skipping its tier."""
    return os.environ.get("CI", "").lower() == "true"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def installed() -> bool:
    """The pinned binary is in place, intact."""
    return BINARY.is_file() and _sha256(BINARY) == SHA256


def install() -> Path:
    """Fetch, verify and unpack the pinned jongodb once; return the binary's path."""
    if installed():
        return BINARY
    if shutil.which("npm") is None:
        raise JongodbError(f"npm is not on PATH, so {PACKAGE}@{VERSION} cannot be fetched")
    INSTALL_DIR.parent.mkdir(parents=True, exist_ok=True)
    # Unpacked beside its final place, then renamed: a half-finished install is never
    # mistaken for a whole one.
    with tempfile.TemporaryDirectory(dir=INSTALL_DIR.parent) as scratch:
        packed = subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent", "--pack-destination", scratch],
            capture_output=True,
            text=True,
            check=False,
        )
        if packed.returncode != 0:
            raise JongodbError(f"npm pack {PACKAGE}@{VERSION} failed: {packed.stderr.strip()}")
        [tarball] = Path(scratch).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            archive.extractall(scratch, filter="data")
        package = Path(scratch) / "package"
        recorded = json.loads((package / "package.json").read_text())["jongodb"]["sha256"]
        actual = _sha256(package / "bin" / "jongodb")
        if recorded != SHA256 or actual != SHA256:
            raise JongodbError(
                f"{PACKAGE}@{VERSION}: binary sha256 {actual}, package.json records "
                f"{recorded}, expected {SHA256}; refusing to run it"
            )
        (package / "bin" / "jongodb").chmod(0o755)
        shutil.rmtree(INSTALL_DIR, ignore_errors=True)
        package.rename(INSTALL_DIR)
    return BINARY


def free_port() -> int:
    """A loopback port free a moment ago (another process may take it before use)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(*options: str) -> tuple[subprocess.Popen[str], str]:
    """A running jongodb on a free loopback port, and its URI; ``options`` are passed
    on (e.g. ``--replica-set-name=rs0``).

    Why retry: the free port is found by binding and releasing it, so another process
    may take it before jongodb does; a fresh port is then tried.
    """
    binary = install()
    failure = ""
    for _ in range(3):
        process = subprocess.Popen(
            [str(binary), "--host=127.0.0.1", f"--port={free_port()}", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        output = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:  # exited
                break
            output.append(line)
            if line.startswith("JONGODB_URI="):
                return process, line.strip().split("=", 1)[1]
        stop(process)
        failure = "".join(output).strip() or f"exit status {process.returncode}"
    raise JongodbError(f"jongodb did not start: {failure}")


def stop(process: subprocess.Popen[str]) -> None:
    """Terminate the server and wait for it; kill it if it does not go."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def main() -> int:
    """The install step: fails under CI, warns elsewhere (the tier is then skipped)."""
    try:
        path = install()
    except (JongodbError, OSError, subprocess.SubprocessError) as exc:
        if in_ci():
            print(f"error: jongodb install failed: {exc}", file=sys.stderr)
            return 1
        print(
            f"warning: jongodb install failed ({exc}); the wire-server tests will be skipped",
            file=sys.stderr,
        )
        return 0
    print(f"jongodb {VERSION}: {path.relative_to(ROOT)} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
