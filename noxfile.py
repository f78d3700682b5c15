"""Every check flowkit runs, in one place: ``nox -l`` lists them, ``nox`` runs the default set.

    nox -s tests -- -k codec     # arguments after "--" go to pytest
    nox -s pythons               # the tests on every Python 3.10-3.13 found here
    nox -s lint typecheck
    nox -s bench                 # not in the default set: installs the peers it compares with
    nox -s soak                  # not in the default set: a long random-SIGKILL run

Virtual environments are kept between runs (``.nox/``); ``nox -R`` skips reinstalling,
``nox --no-reuse-existing-virtualenvs`` starts from scratch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
# Installs are incremental (pip skips what is already there), so keeping the venvs is safe
# and saves a full dependency install on every run.
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint", "typecheck", "docs", "examples"]

ROOT = Path(__file__).parent
#: every Python flowkit supports (pyproject.toml's classifiers say the same)
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
DOCS_TEST = ROOT / "tests" / "test_docs.py"
BENCH_PEERS = [
    "langgraph",
    "langgraph-checkpoint-sqlite",
    # bench/persist_pg.py (needs a PostgreSQL server, see bench/README.md)
    "langgraph-checkpoint-postgres",
    "psycopg[binary]",
    "asyncpg",
]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (arguments after ``--`` go to pytest)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


def _interpreter(version: str) -> str | None:
    """``pythonX.Y`` on the PATH, else a pyenv build of it; None if neither runs."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(
        str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")
    )
    for candidate in candidates:
        if candidate is None:
            continue
        try:  # a pyenv shim exists for every version but runs only the selected ones
            subprocess.run([candidate, "-c", "pass"], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    return None


_FOUND = {version: _interpreter(version) for version in PYTHONS}


@nox.session(python=False)
@nox.parametrize("version", PYTHONS)
def pythons(session: nox.Session, version: str) -> None:
    """Run the test suite on every supported Python (3.10-3.13) found on this machine, on
    the PATH as pythonX.Y or built by pyenv; a version not found is skipped, saying so."""
    interpreter = _FOUND[version]
    if interpreter is None:
        session.skip(
            f"Python {version} is not on this machine (no python{version}, no pyenv build)"
        )
    venv = ROOT / ".nox" / f"pythons-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        session.run(interpreter, "-m", "venv", str(venv), external=True)
    session.run(str(python), "-m", "pip", "install", "-q", "-e", ".[test]", external=True)
    session.run(str(python), "-m", "pytest", *session.posargs, external=True)


@nox.session
def soak(session: nox.Session) -> None:
    """Kill flow runs with parallel branches at random moments, many times, on SQLite,
    files and PostgreSQL; check final states and that no committed method ran twice
    (``-- --kills 1000 --backend sqlite`` to change the defaults: 300 kills each)."""
    session.install("-e", ".[test]")
    session.run("python", "tests/durable/soak.py", *session.posargs)


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
    """Build the documentation site with ``mkdocs build --strict`` (broken links, missing
    pages and unrenderable API references fail) and run every code block in it
    (tests/test_docs.py)."""
    session.install("-e", ".[test,docs]")
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("pytest", str(DOCS_TEST.relative_to(ROOT)), *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every ``examples/*.py`` as its own process; any non-zero exit fails the session.

    Each example gets an empty data folder (``FLOWKIT_DATA_DIR``, also its working
    folder), so the default SQLite database of one example, or of the user, never leaks
    into another, and nothing is written into the repository.
    """
    scripts = sorted((ROOT / "examples").glob("*.py"))
    if not scripts:
        session.skip("no examples/*.py")
    # test: examples/custom_backend.py runs flowkit's contract suite with pytest;
    # many_machines.py needs Celery and PostgreSQL
    session.install("-e", ".[secrets,test,postgres,celery]")
    data_root = Path(session.create_tmp()).resolve() / "examples-data"
    shutil.rmtree(data_root, ignore_errors=True)
    for script in scripts:
        data_dir = data_root / script.stem
        data_dir.mkdir(parents=True)
        session.log(f"example: {script.relative_to(ROOT)}")
        session.chdir(data_dir)  # files an example writes (databases, plots) land here
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


@nox.session(name="soak-workers")
def soak_workers(session: nox.Session) -> None:
    """The Celery worker-kill test at length: 1000 runs, 25 SIGKILLs (RabbitMQ and
    PostgreSQL must be up). ``FLOWKIT_SOAK_RUNS`` / ``FLOWKIT_SOAK_KILLS`` override."""
    session.install("-e", ".[test]")
    env = {
        "FLOWKIT_SOAK_RUNS": os.environ.get("FLOWKIT_SOAK_RUNS", "1000"),
        "FLOWKIT_SOAK_KILLS": os.environ.get("FLOWKIT_SOAK_KILLS", "25"),
    }
    session.run("pytest", "tests/workers/test_worker_kill.py", *session.posargs, env=env)


@nox.session(name="soak-attack")
def soak_attack(session: nox.Session) -> None:
    """Long attack runs on durability (not in the default set): many random SIGKILLs per
    backend, the file backend included, and every other attack test.

    ``FLOWKIT_ATTACK_KILLS`` (default here 40) sets the kills per run; PostgreSQL is read
    from ``FLOWKIT_TEST_POSTGRES_URL`` as in the test suite.
    """
    session.install("-e", ".[test]")
    env = {
        "FLOWKIT_SOAK": "1",
        "FLOWKIT_ATTACK_KILLS": os.environ.get("FLOWKIT_ATTACK_KILLS", "40"),
    }
    session.run("pytest", "tests/durable", "-k", "attack", *session.posargs, env=env)
