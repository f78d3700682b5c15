"""`flowkit runs --where KEY=VALUE` and the metadata `flowkit show` prints, against runs
kicked off for real with ``kickoff(metadata=...)``: a SQLite file, a file-backend folder
and the MariaDB server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowkit import Flow, FlowState, start
from flowkit.cli import main
from flowkit.persistence import (
    FileFlowPersistence,
    FlowPersistence,
    SQLAlchemyFlowPersistence,
    SQLiteFlowPersistence,
)


class Job(Flow[FlowState]):
    @start()
    def work(self) -> str:
        return "done"


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(params=["sqlite", "file", "mysql"])
def stored(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Any:
    """(the backend, a function running the command against it, run ids by name): four
    runs with metadata, one without; ids unique per test (MariaDB is shared)."""
    storage: list[str]
    backend: FlowPersistence
    if request.param == "sqlite":
        backend = SQLiteFlowPersistence(tmp_path / "flows.db")
        storage = ["--db", str(tmp_path / "flows.db")]
    elif request.param == "file":
        backend = FileFlowPersistence(tmp_path / "runs")
        storage = ["--dir", str(tmp_path / "runs")]
    else:
        url = request.getfixturevalue("mysql_url")
        backend = SQLAlchemyFlowPersistence(url)
        storage = ["--db", url]
    tag = uuid.uuid4().hex[:8]
    runs = {
        "a": {"user": f"u1-{tag}", "ticket": 42},
        "b": {"user": f"u2-{tag}", "ticket": 42},
        "c": {"user": f"u1-{tag}", "ticket": "42", "flag": True},
        "d": {"user": f"u1 {tag}", "note": "with space"},
    }
    ids = {name: f"job-{name}-{tag}" for name in [*runs, "plain"]}
    for name, metadata in runs.items():
        Job(persistence=backend).kickoff(inputs={"id": ids[name]}, metadata=metadata)
    Job(persistence=backend).kickoff(inputs={"id": ids["plain"]})

    def cli(*args: str) -> tuple[int, str, str]:
        code = main([*args, *storage])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield cli, ids, tag
    backend.close()


def _listed(cli: Cli, *where: str) -> set[str]:
    args = [arg for value in where for arg in ("--where", value)]
    code, out, err = cli("runs", "--json", "--limit", "1000", *args)
    assert code == 0, err
    return {run["run_id"] for run in json.loads(out)}


def test_runs_where_filters_by_metadata(stored: Any) -> None:
    """--where KEY=VALUE keeps runs whose metadata has KEY = VALUE; repeated, every
    condition must hold; VALUE is JSON when it parses (42 a number, "42" text, true a
    boolean) and text otherwise."""
    cli, ids, tag = stored

    def names(*where: str) -> set[str]:
        by_id = {run_id: name for name, run_id in ids.items()}
        return {by_id[run_id] for run_id in _listed(cli, *where) if run_id in by_id}

    assert names(f"user=u1-{tag}") == {"a", "c"}
    assert names(f"user=u1-{tag}", "ticket=42") == {"a"}
    assert names(f"user=u1-{tag}", 'ticket="42"') == {"c"}
    assert names(f"user=u1-{tag}", "flag=true") == {"c"}
    assert names(f"user=u1 {tag}", "note=with space") == {"d"}
    assert names("ticket=42", f"user=u2-{tag}") == {"b"}
    code, out, _ = cli("runs", "--where", f"user=nobody-{tag}")
    assert (code, out.strip()) == (0, "no runs match these filters")
    code, out, _ = cli("runs", "--where", f"user=u2-{tag}")
    assert code == 0 and ids["b"] in out and ids["a"] not in out


def test_show_prints_the_metadata(stored: Any) -> None:
    """show prints a run's metadata on a Metadata line (none for a run without), and
    show --json has it under "metadata"."""
    cli, ids, tag = stored
    code, out, err = cli("show", ids["a"])
    assert code == 0, err
    assert f'Metadata     {{"user": "u1-{tag}", "ticket": 42}}' in out.splitlines()
    code, out, _ = cli("show", ids["plain"])
    assert code == 0 and "Metadata" not in out
    code, out, _ = cli("show", "--json", ids["c"])
    assert json.loads(out)["metadata"] == {"user": f"u1-{tag}", "ticket": "42", "flag": True}


@pytest.mark.parametrize(
    ("where", "code", "message"),
    [
        pytest.param(["user"], 2, "expected KEY=VALUE", id="no-equals"),
        pytest.param(["=u1"], 2, "expected KEY=VALUE", id="no-key"),
        pytest.param(["user=a", "user=b"], 1, "names 'user' twice", id="twice"),
    ],
)
def test_bad_where_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: list[str], code: int, message: str
) -> None:
    """A --where without KEY=, or naming a key twice, is refused with what to write."""
    with SQLiteFlowPersistence(tmp_path / "flows.db") as backend:
        backend.save_state("r", "a", {"id": "r"})
    args = [arg for value in where for arg in ("--where", value)]
    assert main(["runs", "--db", str(tmp_path / "flows.db"), *args]) == code
    assert message in capsys.readouterr().err
