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


def _class_writes_outside_methods(source: str) -> list[int]:
    """Lines assigning ``cls._attr`` (or ``self._attr``) in a function that is not a
    method of a class defined in the same source: there ``cls`` is someone else's class,
    e.g. a flow class handed to a helper function."""
    import ast

    found: list[int] = []

    def visit(node: ast.AST, in_method: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                for item in child.body:
                    method = isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                    visit(item, method) if method else visit(item, False)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and not in_method:
                visit(child, False)
                continue
            if isinstance(child, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr.startswith("_")
                        and isinstance(target.value, ast.Name)
                        and target.value.id in ("cls", "self")
                        and not in_method
                    ):
                        found.append(child.lineno)
            visit(child, in_method)

    visit(ast.parse(source), False)
    return found


def test_no_helper_function_writes_a_flow_classs_private_attributes() -> None:
    """Class-level caches of a flow (its persistence plan, its retry table) are set by
    ``Flow``'s own class methods, not by helper functions in other modules that take the
    class as ``cls``."""
    package = Path(flowkit.__file__).parent
    found = [
        f"{path.relative_to(package)}:{line}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "_flow.py"
        for line in _class_writes_outside_methods(path.read_text())
    ]
    assert found == [], found


def test_the_class_check_sees_such_a_write() -> None:
    helper = "def plan_for(cls):\n    cls._plan_cache = 1\n"
    method = "class A:\n    @classmethod\n    def f(cls):\n        cls._x = 1\n"
    assert _class_writes_outside_methods(helper) == [2]
    assert _class_writes_outside_methods(method) == []
