"""default_db_path: the environment variable first, then the platform's data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.persistence import default_db_path


def test_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$FLOWKIT_DATA_DIR/flowkit.db when the variable is set."""
    monkeypatch.setenv("FLOWKIT_DATA_DIR", str(tmp_path))
    assert default_db_path() == tmp_path / "flowkit.db"


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        pytest.param("linux", {"XDG_DATA_HOME": "/xdg"}, "/xdg/flowkit/flowkit.db", id="xdg"),
        pytest.param("linux", {}, "~/.local/share/flowkit/flowkit.db", id="linux"),
        pytest.param("darwin", {}, "~/Library/Application Support/flowkit/flowkit.db", id="macos"),
        pytest.param(
            "win32", {"LOCALAPPDATA": "/appdata"}, "/appdata/flowkit/flowkit.db", id="win"
        ),
    ],
)
def test_platform_folders(
    platform: str, env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the variable, the per-user data folder of the platform."""
    monkeypatch.delenv("FLOWKIT_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.platform", platform)
    assert default_db_path() == Path(expected).expanduser()


def test_computing_the_path_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """default_db_path only computes a path; the folder appears on first use."""
    monkeypatch.setenv("FLOWKIT_DATA_DIR", str(tmp_path / "missing"))
    default_db_path()
    assert not (tmp_path / "missing").exists()
