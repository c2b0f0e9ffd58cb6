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
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from . import bounds
from .bounds import PROJECT, ROOT, lower_bound, lowest_constraints, requirements
from .conftest import MEMORY_CAP

FORBIDDEN_PARTS = {"tests", ".cache", "bench-results", "__pycache__", ".venv", ".nox", "dist"}
"""Nothing of the test suite, the wire server's download, benchmark output or build and
virtualenv leftovers belongs in what users install."""


@pytest.mark.parametrize("name", sorted(bounds.tested_requirements()))
def test_each_installed_dependency_is_within_its_declared_bounds(name: str) -> None:
    requirement = bounds.tested_requirements()[name]
    installed = version(name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{name} {installed} is installed, outside the declared {requirement}"
    )
    if os.environ.get("CHATKIT_MONGO_CELL") == "lowest":
        assert Version(installed) == Version(lower_bound(requirement)), (
            f"the lowest cell installed {name} {installed}, not its declared lower bound "
            f"{lower_bound(requirement)}: raise the bound to what resolves (and is tested)"
        )


def test_every_requirement_has_a_lower_bound_and_no_unexplained_cap() -> None:
    """Each direct requirement of the package and of every extra has one ``>=`` bound
    and nothing else: pyproject.toml says no upper cap has a known break to justify it."""
    extras = [None, *PROJECT["optional-dependencies"]]
    for requirement in (r for extra in extras for r in requirements(extra)):
        operators = [spec.operator for spec in requirement.specifier]
        assert operators == [">="], f"{requirement}: expected exactly one >= bound"


def test_the_lowest_constraints_pin_the_package_and_every_extra_to_their_bounds() -> None:
    """The lowest cell installs the test extra, which names every user-facing extra:
    the constraints reach each of their requirements too, not only the top level."""
    pins = dict(line.split("==") for line in lowest_constraints().splitlines())
    extras = [None, *(e for e in PROJECT["optional-dependencies"] if e != "dev")]
    for requirement in (r for extra in extras for r in requirements(extra)):
        assert pins[requirement.name] == lower_bound(requirement), requirement


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
