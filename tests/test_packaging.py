"""The package as it is shipped: what its wheel and sdist hold, and the dependency bounds
it declares against the versions installed where the tests run.

In the matrix's ``lowest`` cell (noxfile.py sets ``CHATKIT_MONGO_CELL=lowest``) every
direct dependency must be installed at exactly its declared lower bound: that is what
makes the bound a tested one.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from .conftest import MEMORY_CAP

ROOT = Path(__file__).resolve().parent.parent
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = PROJECT["name"]
FORBIDDEN_PARTS = {"tests", ".cache", "bench-results", "__pycache__", ".venv", ".nox", "dist"}
"""Nothing of the test suite, the wire server's download, benchmark output or build and
virtualenv leftovers belongs in what users install."""


def requirements(extra: str | None) -> Iterator[Requirement]:
    """The direct requirements of the package (``extra=None``) or of one extra, with the
    extras it names of the package itself expanded."""
    listed = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    for line in listed:
        requirement = Requirement(line)
        if requirement.name == NAME:
            for inner in sorted(requirement.extras):
                yield from requirements(inner)
        else:
            yield requirement


def direct_requirements() -> dict[str, Requirement]:
    """Every direct requirement installed where the tests run (the package's and its
    ``test`` extra's), by name; one name's bounds are the same wherever it is listed."""
    found: dict[str, Requirement] = {}
    for requirement in [*requirements(None), *requirements("test")]:
        earlier = found.setdefault(requirement.name, requirement)
        assert earlier.specifier == requirement.specifier, (earlier, requirement)
    return found


def lower_bound(requirement: Requirement) -> str:
    [bound] = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return bound


@pytest.mark.parametrize("name", sorted(direct_requirements()))
def test_each_installed_dependency_is_within_its_declared_bounds(name: str) -> None:
    requirement = direct_requirements()[name]
    installed = version(name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{name} {installed} is installed, outside the declared {requirement}"
    )
    if os.environ.get("CHATKIT_MONGO_CELL") == "lowest":
        assert installed == lower_bound(requirement), (
            f"the lowest cell installed {name} {installed}, not its declared lower bound "
            f"{lower_bound(requirement)}: raise the bound to what resolves (and is tested)"
        )


def test_every_requirement_has_a_lower_bound_and_no_unexplained_cap() -> None:
    """Each direct requirement of the package and of every extra has one ``>=`` bound
    and nothing else: pyproject.toml says no upper cap has a known break to justify it."""
    extras = [None, *PROJECT["optional-dependencies"]]
    for requirement in (r for extra in extras for r in requirements(extra)):
        operators = sorted(spec.operator for spec in requirement.specifier)
        assert operators == [">="], f"{requirement}: expected exactly one >= bound"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and wheel, built from this checkout by the standard build frontend."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_the_wheel_holds_the_package_typed_and_nothing_else(built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = wheel.namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"chatkit_mongo", f"chatkit_mongo-{PROJECT['version']}.dist-info"}, top
    assert "chatkit_mongo/py.typed" in names
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "chatkit_mongo").rglob("*.py")}
    assert sources <= set(names), sources - set(names)
    assert not [n for n in names if FORBIDDEN_PARTS & set(n.split("/")) or n.endswith(".pyc")]


def test_the_sdist_holds_no_cache_bench_output_or_build_leftovers(
    built: dict[str, Path],
) -> None:
    with tarfile.open(built["sdist"]) as sdist:
        names = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
    assert "chatkit_mongo/py.typed" in names
    assert "pyproject.toml" in names
    leftovers = FORBIDDEN_PARTS - {"tests"}  # the sdist carries the tests, for packagers
    assert not [n for n in names if leftovers & set(n.split("/")) or n.endswith(".pyc")]


def test_a_test_process_cannot_reserve_more_than_the_memory_cap() -> None:
    """A runaway test fails fast with MemoryError instead of eating the machine."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    assert soft <= MEMORY_CAP
    with pytest.raises(MemoryError):
        bytearray(MEMORY_CAP)
