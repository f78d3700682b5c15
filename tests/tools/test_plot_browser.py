"""The plot page renders in a real browser: headless Chromium takes a screenshot of it.

Skipped only on a machine without Chromium and without ``CI`` set; in CI (``.ci/run``
installs Debian's ``chromium``) a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from tool_flows import Research

from flowkit.persistence import SQLiteFlowPersistence

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail(f"no Chromium found ({', '.join(BROWSERS)}); .ci/run installs `chromium`")
    pytest.skip("no Chromium on this machine (apt-get install chromium); CI runs this test")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes): width, height, pixel rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), f"unexpected PNG format {depth}/{colour}"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                upleft = prev[i - channels] if i >= channels else 0
                line[i] = (line[i] + _paeth(left, up, upleft)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return (
        width,
        height,
        [bytes(r) for r in rows]
        if channels == 3
        else [b"".join(r[i : i + 3] for i in range(0, len(r), 4)) for r in rows],
    )


@pytest.mark.slow
def test_plot_renders_in_headless_chromium(tmp_path: Path) -> None:
    """A screenshot of the page with a run drawn on it is not blank: the flow's colours
    (start fill, router outline, the run's green) are on screen."""
    browser = _browser()
    store = SQLiteFlowPersistence(tmp_path / "runs.db")
    try:
        flow = Research(persistence=store)
        flow.kickoff(inputs={"topic": "owls"})
        page = Research(persistence=store).plot(tmp_path / "research.html", run_id=flow.state.id)
    finally:
        store.close()
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=700,700",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.exists(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (700, 700)
    colours = {row[i : i + 3] for row in rows for i in range(0, len(row), 3)}
    white = sum(row.count(b"\xff\xff\xff") for row in rows)
    assert len(colours) > 50, f"only {len(colours)} colours: blank page?"
    assert white < width * height * 0.97, "almost everything is white: nothing drawn"
    assert bytes.fromhex("e6f4ea") in colours, "no start node fill on screen"
    assert bytes.fromhex("0b8043") in colours, "the run's path is not on screen"
