"""The extras behave as documented: the base install answers every ``--help``, ``serve``
and ``bench`` on a server need no test double, and a missing extra is one line saying how
to install it, from a checkout or from the repository.

Each case runs ``chatkit-mongo`` in a child process where the extras' modules cannot be
imported: a ``sitecustomize`` module, put first on that process's ``PYTHONPATH`` only,
installs a meta-path finder that refuses them (Python's documented start-up hook), so
the process sees what a base install has.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from . import capabilities
from .cli_support import command_names, first_answer

ROOT: Final = Path(__file__).resolve().parent.parent
EXTRAS_MODULES: Final = (
    "mongomock",
    "mongomock_motor",
    "pymongo_async_mock",
    "matplotlib",
    "starlette",
    "uvicorn",
    "fastapi",
    "multipart",
    "python_multipart",
    "pymongocrypt",
)
"""What the extras install (demo, bench, http, examples, encryption) and the test doubles."""
TEST_DOUBLES: Final = ("mongomock", "mongomock_motor", "pymongo_async_mock")
_BLOCKER: Final = '''
import importlib.abc
import sys

BLOCKED = frozenset(__BLOCKED__)


class NotInstalled(importlib.abc.MetaPathFinder):
    """Finds the blocked modules nowhere, as if their distributions were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
'''
_INSTALL: Final = (
    "pip install -e '.[{0}]' in a checkout, "
    "or pip install 'chatkit-mongo[{0}] @ git+<repository URL>'"
)


def without(blocked: tuple[str, ...], directory: Path) -> dict[str, str]:
    """The environment of a child process in which ``blocked`` cannot be imported."""
    hook = directory / "sitecustomize.py"
    hook.write_text(_BLOCKER.replace("__BLOCKED__", repr(blocked)), encoding="utf-8")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("MONGODB_URI", "PYTHONPATH", "CHATKIT_MONGO_LOCAL_MASTER_KEY")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(directory), str(ROOT)])
    return env


_MAIN: Final = "from chatkit_mongo.apps.cli import main; main()"


def chatkit_mongo(
    blocked: tuple[str, ...], directory: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``chatkit-mongo args`` run in ``directory``, where ``blocked`` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args],
        env=without(blocked, directory),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=directory,
    )


def test_the_blocker_hides_every_extra(tmp_path: Path) -> None:
    """The seam itself: in the child process, no module of an extra imports."""
    code = (
        "import importlib\n"
        f"for name in {EXTRAS_MODULES!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=without(EXTRAS_MODULES, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["", *command_names()])
def test_every_help_works_with_only_the_base_install(command: str, tmp_path: Path) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = chatkit_mongo(EXTRAS_MODULES, tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: chatkit-mongo {command}".rstrip()), result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "what", "extra"),
    [
        (("serve", "--port", "1"), "the demo", "demo"),
        (("bench", "--out", "bench.json"), "the benchmark", "bench"),
    ],
    ids=["serve", "bench"],
)
def test_the_embedded_backend_without_mongomock_motor_says_how_to_install_it(
    args: tuple[str, ...], what: str, extra: str, tmp_path: Path
) -> None:
    result = chatkit_mongo(TEST_DOUBLES, tmp_path, *args)
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"Error: without --uri {what} runs on the embedded backend, which needs the {extra} "
        f"extra: {_INSTALL.format(extra)} (No module named 'mongomock_motor')\n"
    )


def test_serve_without_the_demo_extra_says_how_to_install_it(tmp_path: Path) -> None:
    result = chatkit_mongo(("uvicorn",), tmp_path, "serve")
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: 'serve' needs the demo extra: {_INSTALL.format('demo')} "
        "(No module named 'uvicorn')\n"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def serving_without_doubles(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``chatkit-mongo serve --uri`` on the wire server, in a process without test doubles."""
    port = _free_port()
    database = f"serve_{port}"
    uri = capabilities.server().uri
    process = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "serve", "--uri", uri, "-d", database, "--port", str(port)],
        env=without(TEST_DOUBLES, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        yield port, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_serve_on_a_server_needs_no_test_double(
    serving_without_doubles: tuple[int, subprocess.Popen[str]],
) -> None:
    port, process = serving_without_doubles
    response = first_answer(port, process)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == []
    process.send_signal(signal.SIGINT)
    _, log = process.communicate(timeout=20)
    assert f"backend: MongoDB database 'serve_{port}'" in log
    assert "mongomock" not in log
