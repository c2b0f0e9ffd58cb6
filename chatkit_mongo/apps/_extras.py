"""How to install an extra, said the way that works today.

Why not ``pip install 'chatkit-mongo[extra]'``: the package is not on a registry, so
that line would fail; it installs from a checkout or straight from its git repository.
"""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """The two install lines for ``extra``: from a checkout, and from the git repository."""
    return (
        f"pip install -e '.[{extra}]' in a checkout, "
        f"or pip install 'chatkit-mongo[{extra}] @ git+<repository URL>'"
    )
