"""The ``flowkit`` command against real runs stored in a SQLite file.

Flows from ``tests/cli_flows.py`` are kicked off for real; the command runs in-process
through ``main([...])`` (and, where it matters, as a real subprocess).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_flows import CountFlow, FailingFlow, ReviewFlow, VaultFlow

from flowkit import Interrupted
from flowkit.cli import main
from flowkit.persistence import (
    FileFlowPersistence,
    SQLAlchemyFlowPersistence,
    SQLiteFlowPersistence,
)

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "flows.db"


@pytest.fixture
def backend(db: Path) -> Iterator[SQLiteFlowPersistence]:
    store = SQLiteFlowPersistence(db)
    yield store
    store.close()


@pytest.fixture
def runs(backend: SQLiteFlowPersistence) -> SQLiteFlowPersistence:
    """Three real runs: review-1 interrupted, count-1 completed, fail-1 failed."""
    paused = ReviewFlow(persistence=backend).kickoff(inputs={"id": "review-1", "topic": "owls"})
    assert isinstance(paused, Interrupted)
    assert CountFlow(persistence=backend).kickoff(inputs={"id": "count-1"}) == {"count": 3}
    with pytest.raises(ValueError, match="upstream"):
        FailingFlow(persistence=backend).kickoff(inputs={"id": "fail-1"})
    return backend


@pytest.fixture
def cli(db: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str) -> Result:
        code = main(["--db", str(db), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def _lines_with(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


# --- runs -----------------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
def test_runs_lists_every_run_with_its_status(cli: Any) -> None:
    """`flowkit runs` shows one row per run: id, flow, status, last seq."""
    result = cli("runs")
    assert result.code == 0, result.err
    header = result.out.splitlines()[0].split()
    assert header[:3] == ["RUN", "ID", "FLOW"]
    rows = {line.split()[0]: line.split() for line in result.out.splitlines()[1:]}
    assert rows["review-1"][1:3] == ["ReviewFlow", "interrupted"]
    assert rows["count-1"][1:4] == ["CountFlow", "completed", "4"]
    assert rows["fail-1"][1:3] == ["FailingFlow", "failed"]


@pytest.mark.usefixtures("runs")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--status", "interrupted"], {"review-1"}, id="status"),
        pytest.param(["--flow", "CountFlow"], {"count-1"}, id="flow"),
        pytest.param(["--flow", "CountFlow", "--status", "failed"], set(), id="both"),
    ],
)
def test_runs_filters(cli: Any, args: list[str], expected: set[str]) -> None:
    """--status and --flow keep only matching runs."""
    result = cli("runs", *args, "--json")
    assert result.code == 0, result.err
    assert {run["run_id"] for run in result.json()} == expected


@pytest.mark.usefixtures("runs")
def test_runs_limit_and_offset_page_through_newest_first(cli: Any) -> None:
    """--limit/--offset page through the runs, most recently updated first."""
    everything = [run["run_id"] for run in cli("runs", "--json").json()]
    assert everything == ["fail-1", "count-1", "review-1"]
    page = cli("runs", "--limit", "1", "--offset", "1")
    assert _lines_with(page.out, "-1") == _lines_with(page.out, "count-1")
    assert "see more with --offset" in page.out


@pytest.mark.usefixtures("runs")
def test_runs_json_is_stable_machine_readable(cli: Any) -> None:
    """--json prints every record field with ISO timestamps."""
    (record,) = cli("runs", "--flow", "CountFlow", "--json").json()
    assert sorted(record) == [
        "created_at",
        "fingerprint",
        "flow_name",
        "info",
        "last_seq",
        "lease_expires_at",
        "lease_owner",
        "parent_run_id",
        "parent_seq",
        "run_id",
        "stale",
        "status",
        "updated_at",
    ]
    assert record["status"] == "completed"
    assert record["stale"] is False
    assert record["last_seq"] == 4
    assert record["updated_at"].endswith("+00:00")
    assert record["fingerprint"] == CountFlow._graph.fingerprint


def test_runs_on_an_empty_database_says_so(cli: Any, backend: SQLiteFlowPersistence) -> None:
    backend.init_db()
    result = cli("runs")
    assert (result.code, result.out.strip()) == (0, "no runs")


# --- show -----------------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
def test_show_interrupted_run_gives_payload_method_and_resume_command(cli: Any) -> None:
    """An interrupted run shows what it asks, in which method, and how to answer."""
    result = cli("show", "review-1")
    assert result.code == 0, result.err
    assert "Status       interrupted" in result.out
    assert "Interrupted in method review; payload:" in result.out
    assert '"question": "publish this?"' in result.out
    assert '"draft": "all about owls"' in result.out
    assert "flowkit resume MODULE:ReviewFlow review-1 --value JSON" in result.out
    assert "ReviewFlow().resume('review-1', value)" in result.out
    assert "  review (triggered by write)" in result.out


@pytest.mark.usefixtures("runs")
def test_show_completed_run_renders_bytes_and_dates_and_offers_fork(cli: Any) -> None:
    """A completed run's state is plain JSON: bytes as "<N bytes>", dates as ISO text."""
    result = cli("show", "count-1")
    assert result.code == 0, result.err
    assert '"count": 3' in result.out
    assert '"blob": "<5 bytes>"' in result.out
    assert '"when": "2024-05-01T12:00:00+00:00"' in result.out
    assert "__fk__" not in result.out
    assert "Latest checkpoint: seq 4 after three" in result.out
    assert "nothing to resume" in result.out
    assert "flowkit fork MODULE:CountFlow count-1 3" in result.out


@pytest.mark.usefixtures("runs")
def test_show_failed_run_gives_the_error(cli: Any) -> None:
    result = cli("show", "fail-1")
    assert result.code == 0, result.err
    assert "Error in method explode: ValueError: the upstream service said no" in result.out
    assert "  explode (triggered by prepare)" in result.out
    assert "flowkit resume MODULE:FailingFlow fail-1" in result.out


@pytest.mark.usefixtures("runs")
def test_show_json(cli: Any) -> None:
    """show --json: record, metadata, lineage, latest checkpoint (stored form), interrupt,
    next step."""
    data = cli("show", "review-1", "--json").json()
    assert sorted(data) == [
        "error",
        "interrupt",
        "latest_checkpoint",
        "lineage",
        "metadata",
        "next",
        "pending",
        "run",
    ]
    assert data["run"]["status"] == "interrupted"
    assert data["interrupt"]["method"] == "review"
    assert data["interrupt"]["payload"] == {"question": "publish this?", "draft": "all about owls"}
    assert data["latest_checkpoint"]["state"]["draft"] == "all about owls"
    assert [p["method"] for p in data["pending"]] == ["review"]
    assert data["next"]["resumable"] is True
    assert data["lineage"] == {"parent_run_id": None, "parent_seq": None, "children": []}
    assert data["metadata"] == {}


def test_show_never_decrypts_secrets(
    cli: Any, backend: SQLiteFlowPersistence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secret fields are shown as "<secret>", in both views, key or no key."""
    from cryptography.fernet import Fernet

    monkeypatch.setenv("FLOWKIT_SECRET_KEY", Fernet.generate_key().decode())
    VaultFlow(persistence=backend).kickoff(inputs={"id": "vault-1", "token": "hunter2-token"})
    stored = backend.load_checkpoint("vault-1")
    assert stored is not None
    ciphertext = stored.state["token"]["v"]

    human = cli("show", "vault-1")
    assert '"token": "<secret>"' in human.out
    machine = cli("show", "vault-1", "--json")
    token = machine.json()["latest_checkpoint"]["state"]["token"]
    assert token == {"__fk__": "secret_str", "v": "<secret>"}
    for output in (human.out, machine.out, cli("history", "vault-1", "--states").out):
        assert "hunter2" not in output
        assert ciphertext not in output


def test_plain_view_turns_every_tag_into_readable_json() -> None:
    """The human view of a stored state has no tags left, whatever the codec stored."""
    from datetime import date, timedelta
    from decimal import Decimal
    from ipaddress import ip_address
    from uuid import UUID

    from flowkit._cli_render import plain, redacted
    from flowkit._codec import encode

    state = {
        "blob": b"abc",
        "buf": bytearray(b"ab"),
        "day": date(2024, 5, 1),
        "wait": timedelta(days=1, seconds=3),
        "uid": UUID(int=1),
        "price": Decimal("1.10"),
        "where": Path("/srv/data"),
        "host": ip_address("10.0.0.1"),
        "tags": {"b", "a"},
        "pair": (1, "x"),
        "by_int": {1: "one"},
        "odd": {"__fk__": "literal"},
        "inf": float("inf"),
    }
    stored = encode(state, path="state", cipher=None)
    shown = plain(stored)
    assert "__fk__" not in json.dumps({k: v for k, v in shown.items() if k != "odd"})
    assert shown == {
        "blob": "<3 bytes>",
        "buf": "<2 bytes>",
        "day": "2024-05-01",
        "wait": "1 day, 0:00:03",
        "uid": "00000000-0000-0000-0000-000000000001",
        "price": "1.10",
        "where": "/srv/data",
        "host": "10.0.0.1",
        "tags": ["a", "b"],
        "pair": [1, "x"],
        "by_int": {"1": "one"},
        "odd": {"__fk__": "literal"},
        "inf": "inf",
    }
    assert redacted(stored) == stored  # no secrets: the stored form is untouched


def test_plain_view_shows_malformed_tags_as_stored() -> None:
    """An inspector must not fail on the corrupt rows it is used to look at."""
    from flowkit._cli_render import plain

    broken = {"a": {"__fk__": "bytes", "v": "not base64!"}, "b": {"__fk__": "nope", "v": 1}}
    assert plain(broken) == broken


# --- history / checkpoint ---------------------------------------------------------------


@pytest.mark.usefixtures("runs")
def test_history_lists_every_checkpoint(cli: Any) -> None:
    result = cli("history", "count-1")
    assert result.code == 0, result.err
    rows = [line.split()[:2] for line in result.out.splitlines()[2:]]
    assert rows == [["1", "kickoff"], ["2", "one"], ["3", "two"], ["4", "three"]]
    assert "next: two" in _lines_with(result.out, " one ")[0]
    assert "finished" in _lines_with(result.out, " three ")[0]


@pytest.mark.usefixtures("runs")
def test_history_with_states(cli: Any) -> None:
    result = cli("history", "count-1", "--states")
    counts = [line.strip() for line in result.out.splitlines() if '"count"' in line]
    assert counts == ['"count": 1,', '"count": 2,', '"count": 3,']


@pytest.mark.usefixtures("runs")
def test_history_json(cli: Any) -> None:
    entries = cli("history", "review-1", "--json", "--states").json()
    assert [(e["seq"], e["method_name"]) for e in entries] == [
        (1, "kickoff"),
        (2, "write"),
        (3, "review"),
    ]
    assert entries[-1]["summary"] == "interrupted in review"
    assert entries[1]["state"]["draft"] == "all about owls"
    assert "state" not in cli("history", "review-1", "--json").json()[0]


@pytest.mark.usefixtures("runs")
def test_checkpoint_shows_state_and_position(cli: Any) -> None:
    result = cli("checkpoint", "count-1", "2")
    assert result.code == 0, result.err
    assert "Method   one" in result.out
    assert '"count": 1' in result.out
    assert "pending: two (after one)" in result.out
    assert "last:    one returned 1" in result.out
    data = cli("checkpoint", "count-1", "2", "--json").json()
    assert data["seq"] == 2
    assert data["state"]["count"] == 1
    assert [p["method"] for p in data["position"]["pending"]] == ["two"]


@pytest.mark.usefixtures("runs")
def test_checkpoint_unknown_seq_is_an_error(cli: Any) -> None:
    result = cli("checkpoint", "count-1", "9")
    assert result.code == 1
    assert "run 'count-1' has no checkpoint 9" in result.err
    assert "flowkit history count-1" in result.err


# --- retention ------------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
def test_delete_with_yes(cli: Any, backend: SQLiteFlowPersistence) -> None:
    result = cli("delete", "count-1", "--yes")
    assert (result.code, result.out.strip()) == (0, "deleted run count-1")
    assert backend.get_run("count-1") is None
    assert backend.history("count-1") == []


@pytest.mark.usefixtures("runs")
def test_delete_without_yes_and_without_a_terminal_refuses(
    cli: Any, backend: SQLiteFlowPersistence, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    result = cli("delete", "count-1")
    assert result.code == 1
    assert "refusing to delete run 'count-1'" in result.err
    assert "--yes" in result.err
    assert backend.get_run("count-1") is not None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("runs")
@pytest.mark.parametrize(("answer", "deleted"), [("y\n", True), ("\n", False), ("no\n", False)])
def test_delete_asks_on_a_terminal(
    cli: Any,
    backend: SQLiteFlowPersistence,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    deleted: bool,
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    result = cli("delete", "count-1")
    assert "Delete run count-1 (CountFlow, completed, 4 checkpoints)?" in result.err
    assert result.code == (0 if deleted else 1)
    assert (backend.get_run("count-1") is None) is deleted


@pytest.mark.usefixtures("runs")
def test_prune_keeps_the_newest_checkpoints(cli: Any, backend: SQLiteFlowPersistence) -> None:
    result = cli("prune", "count-1", "--keep-last", "2")
    assert result.code == 0, result.err
    assert "pruned 2 checkpoint(s) of run count-1; kept seq 3..4" in result.out
    assert [cp.seq for cp in backend.history("count-1")] == [3, 4]
    history = cli("history", "count-1").out
    assert "(checkpoints 1..2 were pruned)" in history
    run = backend.get_run("count-1")
    assert run is not None and run.last_seq == 4


# --- resume / fork --------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
@pytest.mark.parametrize(
    ("value", "result_text"),
    [('"yes"', "published: all about owls"), ('"no"', "rejected")],
)
def test_resume_interrupted_run_with_value(
    cli: Any, backend: SQLiteFlowPersistence, value: str, result_text: str
) -> None:
    result = cli("resume", "cli_flows:ReviewFlow", "review-1", "--value", value)
    assert result.code == 0, result.err
    assert result.out == f'run review-1 completed; result:\n"{result_text}"\n'
    run = backend.get_run("review-1")
    assert run is not None and run.status == "completed"


@pytest.mark.usefixtures("runs")
def test_resume_json_output(cli: Any) -> None:
    data = cli("resume", "cli_flows:ReviewFlow", "review-1", "--value", '"yes"', "--json").json()
    assert data == {
        "result": "published: all about owls",
        "run_id": "review-1",
        "status": "completed",
    }


@pytest.mark.usefixtures("runs")
def test_resume_interrupted_run_without_value_says_to_pass_one(cli: Any) -> None:
    result = cli("resume", "cli_flows:ReviewFlow", "review-1")
    assert result.code == 1
    assert (
        "review-1" in result.err
        and "review" in result.err
        and "resume(run_id, value)" in result.err
    )


@pytest.mark.usefixtures("runs")
def test_resume_completed_run_is_an_error(cli: Any) -> None:
    result = cli("resume", "cli_flows:CountFlow", "count-1")
    assert result.code == 1
    assert "run 'count-1' already completed" in result.err


@pytest.mark.usefixtures("runs")
def test_resume_that_fails_again_reports_the_error(cli: Any) -> None:
    result = cli("resume", "cli_flows:FailingFlow", "fail-1")
    assert result.code == 1
    assert "Traceback" in result.err
    assert "run 'fail-1' failed: ValueError: the upstream service said no" in result.err


@pytest.mark.usefixtures("runs")
def test_resume_with_another_flow_class_is_refused(cli: Any) -> None:
    result = cli("resume", "cli_flows:CountFlow", "review-1")
    assert result.code == 1
    assert "belongs to flow 'ReviewFlow'" in result.err


@pytest.mark.usefixtures("runs")
def test_fork_then_resume_the_fork(cli: Any, backend: SQLiteFlowPersistence) -> None:
    """fork copies checkpoint SEQ into a new run with lineage; resume finishes it."""
    forked = cli("fork", "cli_flows:CountFlow", "count-1", "2", "--run-id", "count-2")
    assert forked.code == 0, forked.err
    assert "forked run count-1 at seq 2 into run count-2" in forked.out
    child = backend.get_run("count-2")
    assert child is not None
    assert (child.parent_run_id, child.parent_seq, child.status) == ("count-1", 2, "running")

    shown = cli("show", "count-1")
    assert "Forks        count-2 (from seq 2)" in shown.out
    assert "Parent       count-1@2" in cli("show", "count-2").out

    resumed = cli("resume", "cli_flows:CountFlow", "count-2", "--json")
    assert resumed.json() == {"result": {"count": 3}, "run_id": "count-2", "status": "completed"}
    original = backend.get_run("count-1")
    assert original is not None and original.last_seq == 4


@pytest.mark.usefixtures("runs")
def test_resume_after_a_definition_change_needs_force(cli: Any) -> None:
    """A changed flow definition is reported with what changed; --force resumes anyway."""
    assert cli("fork", "cli_flows:CountFlow", "count-1", "2", "--run-id", "count-2").code == 0
    refused = cli("resume", "cli_flows:CountFlowChanged", "count-2")
    assert refused.code == 1
    assert "run 'count-2' was started by a different definition of CountFlow" in refused.err
    assert "four" in refused.err
    assert "--force" in refused.err
    forced = cli("resume", "cli_flows:CountFlowChanged", "count-2", "--force")
    assert forced.code == 0, forced.err
    assert forced.out == 'run count-2 completed; result:\n"four was added"\n'


@pytest.mark.usefixtures("runs")
def test_running_run_is_stale_until_someone_holds_its_lease(
    cli: Any, backend: SQLiteFlowPersistence
) -> None:
    """A running run nobody holds a lease on is "stale: resumable"; with a live lease it
    is plain "running" and show names the owner."""
    assert cli("fork", "cli_flows:CountFlow", "count-1", "2", "--run-id", "count-2").code == 0
    (row,) = _lines_with(cli("runs").out, "count-2")
    assert "running (stale: resumable)" in row
    assert cli("show", "count-2", "--json").json()["run"]["stale"] is True

    backend.acquire_lease("count-2", "worker-7", 60.0)
    (row,) = _lines_with(cli("runs").out, "count-2")
    assert "running" in row and "stale" not in row
    shown = cli("show", "count-2").out
    assert "Lease        worker-7 until" in shown
    assert "being executed by worker-7" in shown
    backend.release_lease("count-2", "worker-7")


@pytest.mark.usefixtures("runs")
def test_fork_json_with_generated_id(cli: Any, backend: SQLiteFlowPersistence) -> None:
    data = cli("fork", "cli_flows:ReviewFlow", "review-1", "2", "--json").json()
    assert (data["parent_run_id"], data["parent_seq"]) == ("review-1", 2)
    child = backend.get_run(data["run_id"])
    assert child is not None and child.parent_run_id == "review-1"


# --- errors ---------------------------------------------------------------------------


@pytest.mark.usefixtures("runs")
@pytest.mark.parametrize("command", ["show", "history", "delete", "prune"])
def test_unknown_run_is_an_error_naming_it(cli: Any, command: str) -> None:
    extra = (
        ["--keep-last", "1"] if command == "prune" else (["--yes"] if command == "delete" else [])
    )
    result = cli(command, "no-such-run", *extra)
    assert result.code == 1
    assert "no run 'no-such-run'" in result.err
    assert "flowkit runs" in result.err


def test_missing_database_file_is_an_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    assert main(["--db", str(missing), "runs"]) == 1
    assert f"no flowkit database at {missing}" in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        pytest.param("directory", "is a directory, not a database file", id="directory"),
        pytest.param("garbage", "is not a SQLite database", id="not-sqlite"),
        pytest.param("foreign", "without flowkit's tables", id="foreign-sqlite"),
    ],
)
def test_bad_db_path_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    target = tmp_path / "bad.db"
    """A directory, a non-SQLite file, or another program's SQLite database is refused,
    and a foreign database is left exactly as it was (no flowkit tables created)."""
    if kind == "directory":
        target.mkdir()
    elif kind == "garbage":
        target.write_bytes(b"this is not sqlite " * 100)
    else:
        with contextlib.closing(sqlite3.connect(target)) as raw:
            raw.execute("CREATE TABLE notes (body TEXT)")
            raw.commit()
    before = target.read_bytes() if kind != "directory" else b""
    assert main(["--db", str(target), "runs"]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert str(target) in err
    if kind != "directory":
        assert target.read_bytes() == before


def test_unreachable_database_server_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL whose server does not answer: exit 1, the URL named without its password."""
    url = "postgresql+asyncpg://flowkit:s3cretpw@127.0.0.1:1/flows"
    assert main(["--db", url, "runs"]) == 1
    err = capsys.readouterr().err
    assert "cannot read the flowkit database at postgresql+asyncpg://flowkit:***@127.0.0.1:1" in err
    assert "s3cretpw" not in err


def test_bad_db_url_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", "nosuchdialect://user:pw@host/db", "runs"]) == 1
    err = capsys.readouterr().err
    assert "cannot use database URL nosuchdialect://user:***@host/db" in err
    assert "pw" not in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["runs", "--limit", "0"], id="limit-0"),
        pytest.param(["runs", "--status", "paused"], id="bad-status"),
        pytest.param(
            ["resume", "cli_flows:ReviewFlow", "r", "--value", "yes"], id="value-not-json"
        ),
        pytest.param(["resume", "ReviewFlow", "r"], id="no-module"),
        pytest.param(["prune", "r"], id="prune-without-keep-last"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: flowkit" in capsys.readouterr().err


@pytest.mark.usefixtures("runs")
def test_storage_options_work_after_the_command(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "--db", str(db), "--status", "failed", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["fail-1"]


@pytest.mark.usefixtures("runs")
def test_db_url_from_the_environment(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_DB_URL", f"sqlite+aiosqlite:///{db}")
    assert main(["runs", "--status", "interrupted", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["review-1"]


def test_unknown_module_is_an_error(cli: Any, backend: SQLiteFlowPersistence) -> None:
    backend.init_db()
    result = cli("resume", "no_such_module_here:Flow", "r")
    assert result.code == 1
    assert "cannot import module 'no_such_module_here'" in result.err
    result = cli("resume", "cli_flows:Nope", "r")
    assert "module 'cli_flows' has no attribute 'Nope'" in result.err
    result = cli("resume", "cli_flows:ReviewState", "r")
    assert "cli_flows:ReviewState is not a Flow subclass" in result.err


def test_module_that_fails_to_import_shows_its_traceback(
    cli: Any, backend: SQLiteFlowPersistence, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.init_db()
    (tmp_path / "broken_flows_mod.py").write_text("import no_such_dependency_zz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli("resume", "broken_flows_mod:ReviewFlow", "r")
    assert result.code == 1
    assert "No module named 'no_such_dependency_zz'" in result.err
    assert "importing module 'broken_flows_mod' failed (traceback above)" in result.err


# --- other backends -------------------------------------------------------------------


def test_file_backend_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dir reads a FileFlowPersistence folder; a missing folder is an error."""
    folder = tmp_path / "runs"
    CountFlow(persistence=FileFlowPersistence(folder)).kickoff(inputs={"id": "file-1"})
    assert main(["--dir", str(folder), "runs", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert (record["run_id"], record["status"], record["last_seq"]) == ("file-1", "completed", 4)
    assert main(["history", "file-1", "--dir", str(folder)]) == 0
    assert "4    three" in capsys.readouterr().out
    assert main(["--dir", str(tmp_path / "missing"), "runs"]) == 1
    assert "no FileFlowPersistence folder at" in capsys.readouterr().err
    assert main(["--dir", str(folder), "--db", "x.db", "runs"]) == 1
    assert "either --db or --dir" in capsys.readouterr().err


POSTGRES_URL = os.environ.get(
    "FLOWKIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.mark.postgres
def test_postgres_url(capsys: pytest.CaptureFixture[str]) -> None:
    """--db takes a PostgreSQL URL: list, show and delete a run stored there."""
    store = SQLAlchemyFlowPersistence(POSTGRES_URL)
    try:
        store.list_runs(limit=1)
    except Exception as exc:
        store.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}")
    run_id = f"cli-pg-{uuid.uuid4()}"
    try:
        CountFlow(persistence=store).kickoff(inputs={"id": run_id})
        assert main(["--db", POSTGRES_URL, "runs", "--flow", "CountFlow", "--json"]) == 0
        assert run_id in [r["run_id"] for r in json.loads(capsys.readouterr().out)]
        assert main(["--db", POSTGRES_URL, "show", run_id]) == 0
        assert '"blob": "<5 bytes>"' in capsys.readouterr().out
        assert main(["--db", POSTGRES_URL, "delete", run_id, "--yes"]) == 0
        assert store.get_run(run_id) is None
    finally:
        store.delete_run(run_id)
        store.close()


# --- real processes -------------------------------------------------------------------


def _flowkit(
    *args: str, env: dict[str, str], cwd: Path = TESTS_DIR
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowkit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWKIT_")}
    clean["FLOWKIT_DATA_DIR"] = str(tmp_path / "data")
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS_DIR)])
    return clean


@pytest.mark.slow
def test_crashed_run_is_stale_and_resumable_from_the_command_line(
    db: Path, env: dict[str, str]
) -> None:
    """A process killed mid-run leaves a "running" run; the CLI marks it stale at once
    (its owner's process is gone, though its lease has 60 s left), and `flowkit resume`
    (a real subprocess) finishes it without waiting."""
    script = (
        "import sys; from cli_flows import CountFlow; "
        "from flowkit.persistence import SQLiteFlowPersistence; "
        "CountFlow(persistence=SQLiteFlowPersistence(sys.argv[1]), lease_ttl=60)"
        ".kickoff(inputs={'id': 'crash-1'})"
    )
    crashed = subprocess.run(
        [sys.executable, "-c", script, str(db)],
        env={**env, "FLOWKIT_TEST_CRASH": "1"},
        cwd=TESTS_DIR,
        timeout=60,
    )
    assert crashed.returncode == 3

    listed = _flowkit("--db", str(db), "runs", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = _lines_with(listed.stdout, "crash-1")
    assert "running (stale: resumable)" in row

    resumed = _flowkit("resume", "cli_flows:CountFlow", "crash-1", "--db", str(db), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == 'run crash-1 completed; result:\n{\n  "count": 3\n}\n'
    history = _flowkit("--db", str(db), "history", "crash-1", "--json", env=env)
    assert [e["method_name"] for e in json.loads(history.stdout)] == [
        "kickoff",
        "one",
        "two",
        "three",
    ]


@pytest.mark.slow
def test_default_database_is_found_and_never_created(env: dict[str, str]) -> None:
    """Without --db, the command reads the default SQLite file; if it is missing it says
    so and does not create it."""
    default = Path(env["FLOWKIT_DATA_DIR"]) / "flowkit.db"
    missing = _flowkit("runs", env=env)
    assert missing.returncode == 1
    assert f"no flowkit database at {default} (the default database)" in missing.stderr
    assert not default.exists()

    kick = "from cli_flows import CountFlow; CountFlow().kickoff(inputs={'id': 'default-1'})"
    subprocess.run([sys.executable, "-c", kick], env=env, cwd=TESTS_DIR, check=True, timeout=60)
    listed = _flowkit("runs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["default-1"]


def test_importing_the_cli_does_not_load_storage_drivers(env: dict[str, str]) -> None:
    code = (
        "import sys, flowkit.cli; "
        "heavy = sorted(m for m in ('sqlalchemy', 'aiosqlite', 'asyncpg', 'cryptography') "
        "if m in sys.modules); print(heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
