"""Issue 10: ``Flow`` is the user's object; nothing outside ``_flow.py`` assigns to a
private attribute of a flow (or of any other object it was handed)."""

from __future__ import annotations

import re
from pathlib import Path

import flowkit

# ``name._attr = ...`` where name is not self/cls (a method setting its own object's
# attributes is that object's business).
_FOREIGN_WRITE = re.compile(r"\b(?!self\b|cls\b)[a-z_]\w*\._[a-z]\w*\s*=(?!=)")


def test_no_module_but_flow_writes_another_objects_private_attributes() -> None:
    package = Path(flowkit.__file__).parent
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "_flow.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _FOREIGN_WRITE.search(line.split("#", 1)[0])
    ]
    assert found == [], "\n".join(found)


def test_the_check_sees_such_a_write() -> None:
    assert _FOREIGN_WRITE.search("instance._state = adapter.apply(x)")
    assert not _FOREIGN_WRITE.search("self._state = x")
    assert not _FOREIGN_WRITE.search("if flow._busy == 1:")
