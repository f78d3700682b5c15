"""A custom persistence backend, checked with flowkit's contract suite, then used by a flow.

Run it:  python examples/custom_backend.py      (needs pytest and pytest-asyncio)

``JsonFolderPersistence`` keeps every checkpoint of a run in one JSON-lines file. It
implements the two required operations (``save_state`` / ``load_state``) and the optional
history group (``history`` / ``load_checkpoint``), announced with ``supports_history``.
The script runs ``flowkit.testing.PersistenceContract`` against it with pytest (groups
the backend does not announce are skipped with the reason), then runs a flow on it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from flowkit import Flow, FlowState, listen, start
from flowkit.exceptions import CorruptCheckpointError
from flowkit.persistence import Checkpoint, FlowPersistence
from flowkit.testing import PersistenceContract


class JsonFolderPersistence(FlowPersistence):
    """One ``<run id>.jsonl`` file per run; a line per checkpoint."""

    supports_history = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _file(self, run_id: str) -> Path:
        # Run ids are user-chosen: keep them from naming paths outside the folder.
        safe = "".join(c if c.isalnum() or c in "-_" else f"%{ord(c):02x}" for c in run_id)
        return self.folder / f"{safe}.jsonl"

    def _read(self, run_id: str) -> list[dict[str, Any]]:
        path = self._file(run_id)
        if not path.exists():
            return []
        rows = []
        for seq, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rows.append(json.loads(line))
            except ValueError:  # a damaged line is reported, never skipped
                raise CorruptCheckpointError(
                    f"run {run_id!r} checkpoint seq {seq} in {path} is not valid JSON; "
                    "restore the file or fork from an earlier checkpoint.",
                    run_id=run_id,
                    seq=seq,
                ) from None
        return rows

    def init_db(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def save_state(self, flow_uuid: str, method_name: str, state_data: dict[str, Any]) -> None:
        self.init_db()
        row = {
            "seq": len(self._read(flow_uuid)) + 1,
            "method": method_name,
            "state": state_data,
            "at": datetime.now(timezone.utc).isoformat(),
        }
        with self._file(flow_uuid).open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        rows = self._read(flow_uuid)
        return rows[-1]["state"] if rows else None

    def history(self, run_id: str) -> list[Checkpoint]:
        return [self._checkpoint(run_id, row) for row in self._read(run_id)]

    def load_checkpoint(self, run_id: str, seq: int | None = None) -> Checkpoint | None:
        rows = self._read(run_id)
        if seq is None:
            return self._checkpoint(run_id, rows[-1]) if rows else None
        found = [row for row in rows if row["seq"] == seq]
        return self._checkpoint(run_id, found[0]) if found else None

    @staticmethod
    def _checkpoint(run_id: str, row: dict[str, Any]) -> Checkpoint:
        created = datetime.fromisoformat(row["at"])
        return Checkpoint(run_id, row["seq"], row["method"], row["state"], created)


class TestJsonFolderPersistence(PersistenceContract):
    """The contract suite, opted into with one fixture."""

    @pytest.fixture
    def persistence(self, tmp_path: Path) -> JsonFolderPersistence:
        return JsonFolderPersistence(tmp_path / "runs")

    def corrupt_latest(self, persistence: FlowPersistence, run_id: str) -> None:
        assert isinstance(persistence, JsonFolderPersistence)
        path = persistence._file(run_id)
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join([*lines[:-1], lines[-1][:10]]) + "\n", encoding="utf-8")


class Tally(FlowState):
    count: int = 0


class TallyFlow(Flow[Tally]):
    @start()
    def one(self) -> None:
        self.state.count += 1

    @listen(one)
    def two(self) -> int:
        self.state.count += 1
        return self.state.count


def main() -> None:
    code = pytest.main([__file__, "-q", "-p", "no:cacheprovider", "-W", "error"])
    if code != 0:
        sys.exit(f"the contract suite failed (pytest exit code {code})")
    with tempfile.TemporaryDirectory() as folder:
        store = JsonFolderPersistence(folder)
        flow = TallyFlow(persistence=store)
        print("result:", flow.kickoff())
        for cp in store.history(flow.state.id):
            print(f"  checkpoint {cp.seq} after {cp.method_name}: count={cp.state['count']}")


if __name__ == "__main__":
    main()
