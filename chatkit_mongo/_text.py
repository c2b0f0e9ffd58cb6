"""Wording shared by every message people read."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 file``, ``2 files``, ``0 files``: the count and the noun in agreement.

    The nouns of this package's messages (thread, item, attachment, file, chunk, check,
    index...) are regular except ``index``.
    """
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {'indexes' if noun == 'index' else noun + 's'}"


def shown(value: object, most: int = 40) -> str:
    """``repr(value)``, shortened in the middle past ``most`` characters, so an error
    message about a 5,000-character argument stays one readable line."""
    text = repr(value)
    if len(text) <= most:
        return text
    half = (most - 5) // 2
    return f"{text[:half]}...{text[-half:]} ({len(str(value))} characters)"
