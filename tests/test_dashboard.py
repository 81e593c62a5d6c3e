"""optuna-dashboard, started on localhost, serves the study with the figure and note of `pareto`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_report import hand_made_study

from alphanas_optuna.report import FIGURE_ID, pareto

STUDY = "dash-study"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def _get_json(url: str) -> dict:
    status, body = _get(url)
    assert status == 200, url
    return json.loads(body)


def _dashboard_command(storage: str, port: int) -> list[str]:
    """The `optuna-dashboard` console script of this environment (as the README runs it)."""
    script = Path(sys.executable).with_name("optuna-dashboard")
    if not script.exists():
        found = shutil.which("optuna-dashboard")
        if found is None:
            pytest.skip("the optuna-dashboard command is not installed")
        script = Path(found)
    return [str(script), storage, "--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A study with the Pareto figure and note attached, served by optuna-dashboard.

    Yields ``(base_url, storage)``.
    """
    tmp_path = tmp_path_factory.mktemp("dashboard")
    storage = f"sqlite:///{tmp_path / 'dash.db'}"
    hand_made_study(storage, name=STUDY)
    pareto(storage, STUDY, out=tmp_path / "front.html")

    port = _free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        _dashboard_command(storage, port), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"optuna-dashboard exited with {proc.returncode}:\n"
                    + (tmp_path / "dashboard.log").read_text(errors="replace")
                )
            try:
                if _get(f"{base}/api/meta", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("optuna-dashboard did not answer on /api/meta within 60 s")
            time.sleep(0.25)
        yield base, storage
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _study_id(base: str) -> int:
    summaries = _get_json(f"{base}/api/studies")["study_summaries"]
    (summary,) = [s for s in summaries if s["study_name"] == STUDY]
    assert summary["directions"] == ["maximize"]
    return summary["study_id"]


def test_dashboard_serves_the_study_trials_figure_and_note(dashboard) -> None:
    base, _ = dashboard
    study_id = _study_id(base)
    detail = _get_json(f"{base}/api/studies/{study_id}")
    assert detail["name"] == STUDY

    # Every trial, with the user attributes the objective stores.
    trials = detail["trials"]
    assert len(trials) == 9
    states = [t["state"] for t in trials]
    assert states.count("Complete") == 5 and states.count("Pruned") == 3
    assert states.count("Fail") == 1
    masks = [
        next(a["value"] for a in t["user_attrs"] if a["key"] == "mask")
        for t in trials
        if t["state"] != "Fail"
    ]
    assert masks == ["1111", "1100", "1000", "0001", "0011", "1110", "1100", "0110"]
    assert [t["number"] for t in detail["best_trials"]] == [1]

    # The attached figure, as the dashboard serves it to its plot component.
    graphs = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    assert list(graphs) == [FIGURE_ID]
    figure = graphs[FIGURE_ID]
    traces = {t["name"]: t for t in figure["data"]}
    assert traces["Pareto front"]["x"] == [10.0, 20.0, 20.0, 40.0]
    assert traces["Pareto front"]["y"] == [0.8, 0.88, 0.88, 0.91]
    assert sorted(traces["infeasible"]["y"]) == [0.6, 0.7]
    assert "AlphaNAS Pareto front" in figure["layout"]["title"]["text"]

    # The summary note.
    assert detail["note"]["version"] == 1
    assert f"Pareto front of `{STUDY}`" in detail["note"]["body"]
    assert "mask `1100`" in detail["note"]["body"]
    assert "(trials 1, 6); first feasible one: trial 1" in detail["note"]["body"]

    # The study page itself (the single-page app) is served.
    status, page = _get(f"{base}/dashboard/studies/{study_id}")
    assert status == 200 and b"<html" in page.lower()


def _chromium() -> str | None:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values of the decompressed image data."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    i, idat, width, height = 8, b"", 0, 0
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[i + 8 : i + 16])
        elif kind == b"IDAT":
            idat += data[i + 8 : i + 8 + length]
        i += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.mark.skipif(_chromium() is None, reason="no /usr/bin/chromium (apt-get install chromium)")
def test_study_page_renders_the_figure_in_headless_chromium(dashboard, tmp_path: Path) -> None:
    base, _ = dashboard
    url = f"{base}/dashboard/studies/{_study_id(base)}"
    common = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1800",
        "--virtual-time-budget=8000",
    ]
    # The page after its scripts ran: the dashboard drew the attached figure.
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, timeout=120, check=True
    ).stdout.decode("utf-8", "replace")
    assert f"{STUDY} (id=" in dom  # the page header
    assert f"AlphaNAS Pareto front of '{STUDY}'" in dom  # the figure's title, drawn by plotly
    assert "validation accuracy" in dom and "parameters (M)" in dom  # its axes

    shot = tmp_path / "study.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    width, height, colours = _png_size_and_colours(shot)
    assert (width, height) == (1280, 1800)
    # An empty page compresses to ~10 kB with 4 distinct byte values; the study page has charts.
    assert shot.stat().st_size > 30_000
    assert colours > 100
