"""The dependency bounds pyproject.toml declares, read in one place: for the matrix's
``lowest`` cell (noxfile.py pins each direct dependency to its lower bound with them) and
for tests/test_packaging.py (which checks the installed versions against them)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from packaging.requirements import Requirement

ROOT: Final = Path(__file__).resolve().parent.parent
PROJECT: Final[dict[str, Any]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME: Final[str] = PROJECT["name"]
TESTED_EXTRA: Final = "test"
"""The extra every cell installs: it names every other extra, so all their bounds count."""


def requirements(extra: str | None) -> Iterator[Requirement]:
    """The direct requirements of the package (``extra=None``) or of one extra, with the
    package's own extras that it names expanded."""
    listed = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    for line in listed:
        requirement = Requirement(line)
        if requirement.name == NAME:
            for inner in sorted(requirement.extras):
                yield from requirements(inner)
        else:
            yield requirement


def tested_requirements() -> dict[str, Requirement]:
    """Every direct requirement a cell installs (the package's and its test extra's), by
    name. A name listed twice must carry the same bounds each time: one fact, one value."""
    found: dict[str, Requirement] = {}
    for requirement in [*requirements(None), *requirements(TESTED_EXTRA)]:
        earlier = found.setdefault(requirement.name, requirement)
        if earlier.specifier != requirement.specifier:
            raise ValueError(f"{NAME} declares {earlier} and {requirement}: make them one")
    return found


def lower_bound(requirement: Requirement) -> str:
    """The version of the requirement's one ``>=`` bound."""
    bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if len(bounds) != 1:
        raise ValueError(f"{requirement}: expected exactly one >= bound")
    return bounds[0]


def lowest_constraints() -> str:
    """A pip/uv constraints file pinning each tested direct requirement to its lower
    bound; the resolver then has to find the rest of the environment around them."""
    pins = sorted(f"{name}=={lower_bound(r)}" for name, r in tested_requirements().items())
    return "\n".join(pins) + "\n"
