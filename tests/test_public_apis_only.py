"""flowkit uses only public APIs of its dependencies and of the standard library's
asyncio and threading: no private attribute of aiosqlite, asyncio, threading or
SQLAlchemy objects anywhere in the package (a private API can change in any release,
and flowkit pins ranges, not versions)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowkit"

# Each pattern names what it catches. flowkit's own private names (``self._x``) are
# fine; these are reaches into someone else's internals.
PRIVATE_USES: dict[str, re.Pattern[str]] = {
    "a private asyncio name": re.compile(r"\basyncio(\.\w+)*\._\w+"),
    "a private threading name": re.compile(r"\bthreading\._\w+"),
    "asyncio's private running-loop getter": re.compile(r"\b_get_running_loop\b"),
    "asyncio's private task registries": re.compile(
        r"\b_(all|scheduled|eager)_tasks\b|\b_register_atexit\b"
    ),
    "aiosqlite's private queue or connection": re.compile(r"(?<!self)\._(tx|conn)\b"),
    "a dynamic lookup in asyncio or threading": re.compile(r"getattr\(\s*(asyncio|threading)\b"),
    "aiosqlite's private call helpers": re.compile(
        r"\b(driver|db|conn\w*|raw\w*|\w*aiosqlite\w*)\._execute(_fetchall|_insert)?\("
    ),
    "a private module of a dependency": re.compile(
        r"^\s*(from|import)\s+(aiosqlite|sqlalchemy|asyncpg|asyncio|threading)"
        r"(\.\w+)*\._\w+|^\s*from\s+(aiosqlite|sqlalchemy|asyncpg)(\.\w+)*\s+import\s+.*\b_\w+"
    ),
    "a private attribute of a driver object reached by name": re.compile(
        r"getattr\(\s*(driver|db|conn\w*|raw\w*|engine|cursor|loop|task|pool|dialect)"
        r"\s*,\s*[\"']_(?!_)"
    ),
    "a private attribute of an SQLAlchemy or driver object": re.compile(
        r"\b(sync_engine|sync_connection|engine|connection|conn|dialect|pool|cursor|"
        r"driver|driver_connection|raw|dbapi_connection)\._(?!_)\w+"
    ),
}


def private_uses(source: str) -> list[tuple[int, str, str]]:
    """(line number, what, line) for every private use in ``source``."""
    found = []
    for number, line in enumerate(source.splitlines(), start=1):
        code = line.split("#", 1)[0]
        if not code.strip() or code.lstrip().startswith(('"', "'")):
            continue
        for what, pattern in PRIVATE_USES.items():
            if pattern.search(code):
                found.append((number, what, line.strip()))
    return found


def test_flowkit_uses_no_private_api_of_its_dependencies() -> None:
    problems = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {what}: {line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, what, line in private_uses(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "private APIs used (use the public API instead):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        # What flowkit did before (each would break on a dependency's minor release).
        "    connection: sqlite3.Connection = driver._conn",
        "    driver._tx.put_nowait((None, work))",
        '        if getattr(driver, "_tx", None) is None:',
        "        if asyncio._get_running_loop() is None:",
        '    names = ("_all_tasks",) if sys.version_info < (3, 12) else ("_scheduled_tasks",)',
        "    found = tuple(getattr(asyncio.tasks, name, None) for name in names)",
        '    getattr(threading, "_register_atexit", atexit.register)(_shutdown_all)',
        "        return await db._execute(function)",
        "    loop = asyncio.events._get_running_loop()",
        "from asyncio.tasks import _all_tasks",
        "    raw = engine.sync_engine._connection_cls",
        "    dbapi = connection._dbapi_connection",
    ],
)
def test_the_check_catches_private_uses(line: str) -> None:
    assert private_uses(line), f"not caught: {line}"


@pytest.mark.parametrize(
    "line",
    [
        "        return await self._execute(lambda: prepare_kickoff(self, given, shown))",
        "        result = await flow._execute(",
        '        graph = getattr(flow_cls, "_graph", None)',
        "    loop = asyncio.get_running_loop()",
        "    pending = asyncio.all_tasks(loop)",
        "        rows = await driver.execute_fetchall(stmt.sql, stmt.params)",
        "            return await in_thread(getattr(self, op), *args, **kwargs)",
        "        self._connection = None",
    ],
)
def test_the_check_passes_public_uses(line: str) -> None:
    assert not private_uses(line), f"wrongly caught: {line}"
