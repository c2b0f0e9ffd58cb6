"""How to install an extra, said the way that works today.

Why not ``pip install 'chatkit-mongo[extra]'``: the package is not on a registry, so
that line would fail; it installs from a checkout or straight from its git repository.
Why one place: every hint (the CLI's errors, the example's docstring) says it the same.
"""

from __future__ import annotations

import click


def install_commands(extra: str) -> tuple[str, str]:
    """The commands that install ``extra``: in a checkout, and from the git repository."""
    return (
        f"pip install -e '.[{extra}]'",
        f"pip install 'chatkit-mongo[{extra}] @ git+<repository URL>'",
    )


def install_hint(extra: str) -> str:
    """The two install lines for ``extra``: from a checkout, and from the git repository."""
    checkout, repository = install_commands(extra)
    return f"{checkout} in a checkout, or {repository}"


def missing_extra(what: str, extra: str, exc: ImportError) -> click.ClickException:
    """The one-line error for ``what`` needing ``extra``, naming the module not found."""
    return click.ClickException(f"{what} needs the {extra} extra: {install_hint(extra)} ({exc})")
