"""Every check flowkit runs, in one place: ``nox -l`` lists them, ``nox`` runs the default set.

    nox -s tests -- -k codec     # arguments after "--" go to pytest
    nox -s lint typecheck
    nox -s bench                 # not in the default set: installs the peers it compares with

Virtual environments are kept between runs (``.nox/``); ``nox -R`` skips reinstalling,
``nox --no-reuse-existing-virtualenvs`` starts from scratch.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
# Installs are incremental (pip skips what is already there), so keeping the venvs is safe
# and saves a full dependency install on every run.
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck", "docs", "examples"]

ROOT = Path(__file__).parent
DOCS_TEST = ROOT / "tests" / "test_docs.py"
BENCH_PEERS = ["langgraph", "langgraph-checkpoint-sqlite"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (arguments after ``--`` go to pytest)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check lint rules and formatting with ruff (does not change files)."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the flowkit package with mypy in strict mode."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "-p", "flowkit", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Run every code block in the documentation (tests/test_docs.py)."""
    if not DOCS_TEST.exists():
        session.skip(f"{DOCS_TEST.relative_to(ROOT)} does not exist yet")
    session.install("-e", ".[test]")
    session.run("pytest", str(DOCS_TEST.relative_to(ROOT)), *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every ``examples/*.py`` as its own process; any non-zero exit fails the session.

    Each example gets an empty data folder (``FLOWKIT_DATA_DIR``), so the default SQLite
    database of one example, or of the user, never leaks into another.
    """
    scripts = sorted((ROOT / "examples").glob("*.py"))
    if not scripts:
        session.skip("no examples/*.py")
    session.install("-e", ".[secrets]")
    data_root = Path(session.create_tmp()).resolve() / "examples-data"
    shutil.rmtree(data_root, ignore_errors=True)
    for script in scripts:
        data_dir = data_root / script.stem
        data_dir.mkdir(parents=True)
        session.log(f"example: {script.relative_to(ROOT)}")
        session.run(
            "python",
            str(script),
            env={"FLOWKIT_DATA_DIR": str(data_dir)},
        )


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks against flowkit and the peers it is compared with (LangGraph).

    Runs ``bench/run.py`` if it exists, else every ``bench/*.py`` in name order.
    """
    bench_dir = ROOT / "bench"
    runner = bench_dir / "run.py"
    scripts = [runner] if runner.exists() else sorted(bench_dir.glob("*.py"))
    if not scripts:
        session.skip("no bench/*.py")
    session.install("-e", ".", *BENCH_PEERS)
    for script in scripts:
        session.run("python", str(script.relative_to(ROOT)), *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Long attack runs on durability (not in the default set): many random SIGKILLs per
    backend, the file backend included, and every other attack test.

    ``FLOWKIT_ATTACK_KILLS`` (default here 40) sets the kills per run; PostgreSQL is read
    from ``FLOWKIT_TEST_POSTGRES_URL`` as in the test suite.
    """
    session.install("-e", ".[test]")
    import os

    env = {
        "FLOWKIT_SOAK": "1",
        "FLOWKIT_ATTACK_KILLS": os.environ.get("FLOWKIT_ATTACK_KILLS", "40"),
    }
    session.run("pytest", "tests/durable", "-k", "attack", *session.posargs, env=env)
