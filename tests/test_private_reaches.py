"""No code reaches into another object's private members.

A private member (``_name``, not a ``__dunder__``) is read or set only through ``self``
or ``cls``: modules talk through public methods, and a library's private member can
change in any release (ChatKit's ``AttachmentBase._serialize`` once was read here).
The scan parses the code (``ast``), so comments and strings do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

_ROOT: Final = Path(__file__).resolve().parent.parent
_SCANNED: Final = ("chatkit_mongo", "tests", "scripts", "examples")


def private_reaches(source: str) -> list[tuple[int, str]]:
    """Each ``obj._name`` in ``source`` whose ``obj`` is not ``self`` or ``cls``: its
    line and its code, in line order."""
    reaches = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        reaches.append((node.lineno, ast.unparse(node)))
    return sorted(reaches)


def _scanned_files() -> list[Path]:
    return [path for folder in _SCANNED for path in sorted((_ROOT / folder).rglob("*.py"))]


def test_no_code_reaches_into_another_objects_private_members() -> None:
    files = _scanned_files()
    assert len(files) > 50, "the scan found too few files: the layout changed?"
    found = [
        f"{path.relative_to(_ROOT)}:{line}: {code}"
        for path in files
        for line, code in private_reaches(path.read_text(encoding="utf-8"))
    ]
    assert not found, "private members reached from outside:\n" + "\n".join(found)


def test_the_scan_finds_reaches_in_code_only() -> None:
    source = """
import m
class C:
    def f(self, other):
        self._mine = cls._ours = 1   # self and cls: allowed
        other._theirs = 2            # another object's: found
        m._private()                 # a module's: found
        make()._built                # a call's result: found
        text = "x._in_a_string"      # a string: not code
        return other.__dict__, other.public  # dunder and public: allowed
"""
    assert private_reaches(source) == [
        (6, "other._theirs"),
        (7, "m._private"),
        (8, "make()._built"),
    ]
