"""The compatibility matrix and the wheel check, run by nox (``make matrix``, ``.ci/run``).

Cells, each in a fresh virtualenv made by uv from the project's own files:

- ``lowest``: Python 3.11, every direct dependency (of the package and of its ``test``
  extra, which names every other extra) pinned to its declared lower bound by a
  constraints file generated from pyproject.toml (tests/bounds.py); the resolver fits
  the indirect dependencies around those pins. ``tests/test_packaging.py`` fails the
  cell if any installed version is not exactly its bound. (Why not uv's
  ``--resolution lowest-direct``: it may settle on a higher direct version to keep an
  indirect one newest, so a bound could go untested.)
- ``newest-3.11``, ``newest-3.12``, ``newest-3.13``: the newest releases.
- ``wheel``: the wheel in ``dist/`` (``make dist``) installed with no extras into a fresh
  virtualenv, its CLI and a store round trip run against jongodb; then with the ``demo``
  extra, the demo server for one request.

Each cell runs the whole suite by default. ``-- --tier-subset`` (as ``.ci/run`` passes)
runs the subset chosen by rule: every test on the in-process doubles plus the wire tier
on one driver (PyMongo Async), leaving out the Motor-over-a-socket runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # nox imports this file by path; tests/ lives beside it
from tests import bounds, jongodb  # noqa: E402

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lowest", "newest"]

PYTHONS = ["3.11", "3.12", "3.13"]
CELL_VARIABLE = "CHATKIT_MONGO_CELL"
"""Tells tests/test_packaging.py which cell it runs in (``lowest`` checks exact bounds)."""
SUBSET = ["-k", "not server-motor"]
"""The rule of ``--tier-subset``: drop the Motor runs of the wire tier, keep the rest."""
PYTEST = ["-n", "auto", "--dist", "loadfile", "-p", "no:cacheprovider"]
"""Across the cores, a file's tests on one worker: a docs page's blocks depend on each
other in order (see the Makefile's pytest target for why not loadgroup)."""


def _pyenv_versions() -> None:
    """Let pyenv's shims answer for every installed 3.11-3.13 at once.

    Why: with pyenv, ``python3.12`` on PATH is a shim that works only for the versions
    pyenv is told to expose; uv (and nox) look interpreters up by that name.
    """
    if "PYENV_VERSION" in os.environ or shutil.which("pyenv") is None:
        return
    listed = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    wanted = [v for v in listed if any(v.startswith(f"{p}.") for p in PYTHONS)]
    if wanted:
        os.environ["PYENV_VERSION"] = ":".join(wanted)


_pyenv_versions()


def _pytest(session: nox.Session, cell: str) -> None:
    """The suite in this cell: the wire server installed first, then pytest across the
    cores (one jongodb per worker)."""
    args = list(session.posargs)
    if "--tier-subset" in args:
        args.remove("--tier-subset")
        args = [*SUBSET, *args]
    session.run("python", "-m", "tests.jongodb")
    session.run("python", "-m", "pytest", *PYTEST, *args, env={CELL_VARIABLE: cell})


@nox.session(python="3.11")
def lowest(session: nox.Session) -> None:
    """Python 3.11, every direct dependency at its lower bound."""
    pins = Path(session.create_tmp()) / "lowest-constraints.txt"
    pins.write_text(bounds.lowest_constraints())
    session.install("-c", str(pins), ".[test]")
    _pytest(session, "lowest")


@nox.session(python=PYTHONS)
def newest(session: nox.Session) -> None:
    """The newest release of every dependency, on each supported Python."""
    session.install("--upgrade", ".[test]")
    _pytest(session, "newest")


def _wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("chatkit_mongo-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError("no wheel in dist/: run `make dist` first")
    return wheels[-1]


def _subcommands(session: nox.Session) -> list[str]:
    """The names under "Commands:" in ``chatkit-mongo --help``."""
    shown = session.run("chatkit-mongo", "--help", silent=True)
    assert isinstance(shown, str)
    listing = shown.split("Commands:", 1)[1]
    # A command's row is indented two spaces; its wrapped help further.
    rows = [line for line in listing.splitlines() if line[:2] == "  " and line[2:3].strip()]
    names = [row.split()[0] for row in rows]
    if not names:
        raise RuntimeError(f"no subcommands in chatkit-mongo --help:\n{shown}")
    return names


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Until the demo server accepts connections (it exits on a startup error)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.2)
        else:
            return
    raise RuntimeError(f"the demo server did not listen on port {port} within 60 s")


@nox.session(python="3.11")
def wheel(session: nox.Session) -> None:
    """The built wheel as a user gets it: no extras, then with ``demo``."""
    built = _wheel()
    smoke = ROOT / ".ci" / "wheel_smoke.py"
    session.install(str(built))
    session.chdir(session.create_tmp())  # away from the checkout: the wheel is imported
    # A command whose module needs an extra (bench) refuses, naming the extra, until
    # that extra is installed; its help is then shown with the extra below.
    needing_extras: dict[str, str] = {}
    for name in _subcommands(session):
        shown = session.run("chatkit-mongo", name, "--help", silent=True, success_codes=[0, 1])
        assert isinstance(shown, str)
        refusal = f"'{name}' needs the "
        if refusal in shown:
            needing_extras[name] = shown.split(refusal, 1)[1].split()[0]
        elif "Usage:" not in shown:
            session.error(f"chatkit-mongo {name} --help printed no usage:\n{shown}")
    session.run("chatkit-mongo", "init", "--dry-run")
    process, uri = jongodb.start()
    try:
        session.run("chatkit-mongo", "--uri", uri, "init")
        session.run("python", str(smoke), "store", uri)
    finally:
        jongodb.stop(process)

    extras = ",".join(sorted({"demo", *needing_extras.values()}))
    session.install(f"{built}[{extras}]")
    for name in needing_extras:
        session.run("chatkit-mongo", name, "--help", silent=True)
    port = jongodb.free_port()
    server = subprocess.Popen(
        [str(Path(session.bin) / "chatkit-mongo"), "serve", "--port", str(port)],
        # No URI: the demo serves from its embedded in-memory database.
        env={k: v for k, v in os.environ.items() if k != "MONGODB_URI"},
    )
    try:
        _wait_for_port(port, server)
        session.run("python", str(smoke), "demo", f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=30)
