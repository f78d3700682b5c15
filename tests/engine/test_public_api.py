"""The front door: exactly the public names, and every error under FlowkitError."""

from __future__ import annotations

import inspect

import flowkit
from flowkit import exceptions


def test_all_is_exactly_the_public_surface() -> None:
    """flowkit.__all__ lists the public API, sorted, and nothing else is public."""
    assert flowkit.__all__ == sorted(flowkit.__all__)
    assert set(flowkit.__all__) == {
        "Flow",
        "FlowState",
        "FlowkitError",
        "InputProvider",
        "InputResponse",
        "Interrupted",
        "RecoveredRun",
        "RecoveryReport",
        "Retry",
        "and_",
        "generate_key",
        "listen",
        "migration",
        "or_",
        "persist",
        "router",
        "start",
    }
    for name in flowkit.__all__:
        assert getattr(flowkit, name) is not None


def test_every_exception_derives_from_flowkit_error_and_a_builtin() -> None:
    """Each leaf error subclasses FlowkitError and a builtin exception besides Exception."""
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.FlowkitError)
        if cls is exceptions.FlowkitError or inspect.isabstract(cls):
            continue
        builtins = [
            b
            for b in cls.__mro__
            if b.__module__ == "builtins" and b not in (object, Exception, BaseException)
        ]
        if name not in ("StateError",):
            assert builtins, f"{name} subclasses no specific builtin"


def test_import_does_not_load_sqlalchemy() -> None:
    """Importing flowkit loads no storage driver (they load on first persistence use)."""
    import subprocess
    import sys

    code = (
        "import sys, flowkit, flowkit.persistence; "
        "print([m for m in ('sqlalchemy', 'aiosqlite', 'asyncpg') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
