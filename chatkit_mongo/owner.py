"""Who owns the data a Store call may touch.

Every document carries its owner, every query filters on it first, and every index
starts with it: that is what keeps one tenant's threads out of another's reach even
when their ids are the same. The owner comes from the request context that ChatKit
passes to every Store call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ._checks import check_encodable
from .errors import OwnerError

OwnerResolver = Callable[[Any], object]
"""``context -> owner``: returns the user or tenant id that a call acts for."""

MAX_OWNER_LENGTH: Final = 512


def default_owner(context: Any) -> object:
    """``context.user_id``, else ``context["user_id"]``, else None.

    Why a plain dict is looked at first: it is the common context (and has no
    ``user_id`` attribute), and the attribute miss plus the ``Mapping`` check cost
    more than the rest of the owner check on every call.
    """
    if type(context) is dict:
        return context.get("user_id")
    value = getattr(context, "user_id", None)
    if value is None and isinstance(context, Mapping):
        value = context.get("user_id")
    return value


def resolve_owner(resolver: OwnerResolver, context: Any) -> str:
    """The owner for ``context``, or :class:`OwnerError` before anything is read or written."""
    owner = resolver(context)
    if type(owner) is str and 0 < len(owner) <= MAX_OWNER_LENGTH and owner.isascii():
        return owner  # the common owner, at once (see ``check_id``): every call pays this
    if not isinstance(owner, str) or not owner:
        raise OwnerError(
            f"MongoStore cannot tell whose data this call may touch: the owner resolver gave "
            f"{owner!r} for context {type(context).__name__}. Give the context a non-empty "
            "user_id, or build the store with owner=lambda context: <user or tenant id as str>."
        )
    return check_owner(owner)


def check_owner(owner: object) -> str:
    """``owner`` if it is one the store can write, else :class:`OwnerError`.

    Why one check for the store, the purges and export: an owner the store accepts can
    always be purged and exported, and a bad one is refused alike everywhere.
    """
    if not isinstance(owner, str):
        raise OwnerError(f"owner must be a str, not {type(owner).__name__}")
    if not owner:
        raise OwnerError("owner must not be empty")
    if len(owner) > MAX_OWNER_LENGTH:
        raise OwnerError(f"owner is {len(owner)} characters long; at most {MAX_OWNER_LENGTH}")
    try:
        return check_encodable(owner, "owner")
    except ValueError as exc:
        raise OwnerError(str(exc)) from None
