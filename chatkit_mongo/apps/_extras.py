"""What a command says when an optional extra it needs is not installed.

Why one place: the package is installed from a checkout or from its git repository (it
is not on a package registry), so ``pip install 'chatkit-mongo[demo]'`` would fail; every
hint names both ways that work, the same way.
"""

from __future__ import annotations

import click


def install_commands(extra: str) -> tuple[str, str]:
    """The commands that install ``extra``: in a checkout, and from the repository."""
    return (
        f"pip install -e '.[{extra}]'",
        f"pip install 'chatkit-mongo[{extra}] @ git+<repository URL>'",
    )


def install_hint(extra: str) -> str:
    """Both commands that install ``extra``, as one clause of an error message."""
    checkout, repository = install_commands(extra)
    return f"in a checkout, {checkout}; else {repository}"


def missing_extra(what: str, extra: str, exc: ImportError) -> click.ClickException:
    """The one-line error for ``what`` needing ``extra``, naming the module not found."""
    return click.ClickException(f"{what} needs the {extra} extra ({exc}): {install_hint(extra)}")
