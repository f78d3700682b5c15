"""Deploy-safe resume, state migrations and secrets (SPEC 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flows import Credentials, OrderV1, OrderV2, UsesSecret, backend
from pydantic import SecretStr

from flowkit import Flow, Interrupted, listen, start
from flowkit.exceptions import DefinitionChangedError, MigrationError, SecretKeyError


def _approval(version: int) -> type[Flow[Any]]:
    class Draft(Flow, name="versioned-approval"):  # type: ignore[type-arg]
        @start()
        def write(self) -> str:
            return "draft"

        @listen(write)
        def review(self, draft: str) -> str:
            return str(self.interrupt(draft))

        if version == 2:

            @listen(review)
            def publish(self, verdict: str) -> str:
                return "published " + verdict

    return Draft


def test_resume_with_changed_definition_fails_naming_the_change_unless_forced(
    backend_spec: str, run_id: str
) -> None:
    """A run started by one definition and resumed by another reports what changed;
    force=True continues with the new one."""
    p = backend(backend_spec)
    try:
        out = _approval(1)(persistence=p).kickoff(inputs={"id": run_id})
        assert isinstance(out, Interrupted)
        with pytest.raises(DefinitionChangedError, match="method 'publish' was added"):
            _approval(2)(persistence=p).resume(run_id, "ok")
        assert _approval(2)(persistence=p).resume(run_id, "ok", force=True) == "published ok"
    finally:
        p.close()


def test_migrations_upgrade_stored_states_on_load(backend_spec: str, run_id: str) -> None:
    """A state stored by model version 1 is migrated to version 2 when a run reloads it;
    a version with no migration path is a clear error."""

    class V1(Flow[OrderV1], name="order"):
        @start()
        def price(self) -> float:
            self.state.total = 12.5
            return self.state.total

    class V2(Flow[OrderV2], name="order"):
        @start()
        def price(self) -> int:
            return self.state.total_cents

    p = backend(backend_spec)
    try:
        V1(persistence=p).kickoff(inputs={"id": run_id})
        assert V2(persistence=p).kickoff(inputs={"id": run_id}) == 1250
        assert p.load_checkpoint(run_id).meta["state_version"] == 2  # type: ignore[union-attr]
        # the newest checkpoint is now version 2: old code cannot read it
        with pytest.raises(MigrationError, match=r"version 2, newer than this code's version 1"):
            V1(persistence=p).kickoff(inputs={"id": run_id})
    finally:
        p.close()


def test_missing_migration_step_is_named(backend_spec: str, run_id: str) -> None:
    """No @migration(from_version=N) for a stored version N -> MigrationError naming it."""
    from typing import ClassVar

    from flowkit import FlowState

    class V3(FlowState):
        flowkit_version: ClassVar[int] = 3
        total: float = 0

    class V1(Flow[OrderV1], name="order3"):
        @start()
        def price(self) -> None: ...

    class Three(Flow[V3], name="order3"):
        @start()
        def price(self) -> None: ...

    p = backend(backend_spec)
    try:
        V1(persistence=p).kickoff(inputs={"id": run_id})
        with pytest.raises(MigrationError, match=r"no @migration\(from_version=1\)"):
            Three(persistence=p).kickoff(inputs={"id": run_id})
    finally:
        p.close()


def test_secrets_round_trip_encrypted_and_never_in_clear(tmp_path: Path, run_id: str) -> None:
    """SecretStr fields are stored encrypted with the user's key (never in the SQLite file
    or its WAL) and come back on reload."""
    from flowkit.persistence import SQLiteFlowPersistence

    db = tmp_path / "secrets.db"
    secret = "sk-very-secret-value-12345"
    key = "correct horse battery staple"
    p = SQLiteFlowPersistence(db)
    try:
        assert (
            UsesSecret(persistence=p, secret_key=key).kickoff(
                inputs={"id": run_id, "api_key": secret}
            )
            == secret[::-1]
        )
        again = UsesSecret(persistence=p, secret_key=key)
        assert again.kickoff(inputs={"id": run_id}) == secret[::-1]
        assert isinstance(again.state.api_key, SecretStr)
        for path in tmp_path.iterdir():
            assert secret.encode() not in path.read_bytes(), path.name
    finally:
        p.close()
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path.name


def test_secret_without_key_is_refused_naming_the_field(
    tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key, saving a state with a secret fails naming the field; nothing written."""
    from flowkit.persistence import SQLiteFlowPersistence

    monkeypatch.delenv("FLOWKIT_SECRET_KEY", raising=False)
    p = SQLiteFlowPersistence(tmp_path / "nokey.db")
    try:
        with pytest.raises(SecretKeyError, match=r"state\.api_key"):
            UsesSecret(persistence=p).kickoff(inputs={"id": run_id, "api_key": "x"})
        assert p.get_run(run_id) is None or p.load_state(run_id) is None
    finally:
        p.close()


def test_state_model_secret_default_needs_key_too() -> None:
    """Credentials() has a SecretStr field; the model itself is fine without storage."""
    assert Credentials().api_key.get_secret_value() == ""


def test_persist_secret_key_encrypts_and_a_generated_key_works(
    tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """@persist(store, secret_key=flowkit.generate_key()) encrypts secret fields; the
    flow reads them back with the same key."""
    import flowkit
    from flowkit import Flow, persist, start
    from flowkit.persistence import SQLiteFlowPersistence

    monkeypatch.delenv("FLOWKIT_SECRET_KEY", raising=False)
    store = SQLiteFlowPersistence(tmp_path / "persist-key.db")

    @persist(store, secret_key=flowkit.generate_key())
    class Keyed(Flow[Credentials]):
        @start()
        def call(self) -> str:
            return self.state.api_key.get_secret_value()

    try:
        assert Keyed().kickoff(inputs={"id": run_id, "api_key": "sk-123"}) == "sk-123"
        assert Keyed().kickoff(inputs={"id": run_id}) == "sk-123"
        assert "sk-123" not in str(store.load_state(run_id))
    finally:
        store.close()


def test_backend_secret_key_still_works_but_is_deprecated(tmp_path: Path, run_id: str) -> None:
    """A key given to the backend (the old way) is still used, with a DeprecationWarning
    saying to pass it to the flow."""
    from flowkit.persistence import SQLiteFlowPersistence

    p = SQLiteFlowPersistence(tmp_path / "old-way.db", secret_key="an old passphrase")
    try:
        with pytest.warns(DeprecationWarning, match=r"Flow\(secret_key=\.\.\.\)"):
            assert (
                UsesSecret(persistence=p).kickoff(inputs={"id": run_id, "api_key": "abc"}) == "cba"
            )
    finally:
        p.close()


def test_empty_or_wrongly_typed_secret_key_is_refused() -> None:
    """Flow(secret_key="") or a non-str key is a FlowConfigurationError naming the flow."""
    from flowkit.exceptions import FlowConfigurationError

    with pytest.raises(FlowConfigurationError, match="UsesSecret"):
        UsesSecret(secret_key="")
    with pytest.raises(FlowConfigurationError, match="secret_key=123"):
        UsesSecret(secret_key=123)  # type: ignore[arg-type]
