"""The MLflow UI, checked for real: ``mlflow server`` over a store a small study filled, the
experiment's runs opened in headless Chromium, the study's runs and the avg_gap column on the page.

The pages are the shared views that falw_ray keeps on every study's experiment (tracking.VIEWS):
``#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=falw-cells`` (one row per
cell), ``falw-final`` and ``falw-search``. The cell view's screenshot is saved under the test's tmp
folder (and copied to $FALW_TEST_ARTIFACTS when set); the path is printed.

Chromium is Debian's package: when it is missing the test installs it (root with apt-get). Where
it cannot be installed, the test skips, saying why, except under CI (CI=true, as .ci/run sets):
there a missing browser fails it, so the UI is never left unchecked by a skip nobody reads.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from study_store import tiny_study

from falw_ray.study.tracking.tracker import Tracker

BROWSER_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--no-proxy-server",
    "--window-size=2560,1000", "--virtual-time-budget=20000",
)
AVG_GAP_CELL = re.compile(r'<span[^>]*id="cell-metrics\.`avg_gap`-[^"]*"[^>]*>([^<]*)</span>')


def under_ci() -> bool:
    """CI is set (as falw_ray's progress output reads it: anything but empty, 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """No browser: a failure under CI, a skip (with its reason) elsewhere."""
    if under_ci():
        pytest.fail(f"{reason} (CI is set: the MLflow UI test must run, not skip; .ci/run installs chromium)",
                    pytrace=False)
    pytest.skip(reason)


def find_chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and possible; else skip (fail under CI),
    saying why."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    if not shutil.which("apt-get"):
        unavailable("Chromium is not installed and there is no apt-get to install it: install Debian's 'chromium'")
    if os.geteuid() != 0:
        unavailable("Chromium is not installed and installing it needs root: sudo apt-get install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=240, check=False)
        done = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], env=env,
                              capture_output=True, text=True, timeout=480, check=False)
    except subprocess.TimeoutExpired:
        unavailable("Chromium is not installed and 'apt-get install chromium' did not finish in time")
    if found := shutil.which("chromium"):
        return found
    unavailable(f"Chromium is not installed and 'apt-get install chromium' failed: {done.stderr.strip()[-300:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End a process we started in its own session, and its children, by its process group."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def browser() -> str:
    """Found (or installed) first: without a browser there is no point running the study."""
    return find_chromium()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_study(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 over the tiny study's store: one worker, no job runner."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tiny.uri, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n"
                            f"{(folder / 'server.log').read_text(errors='replace')[-2000:]}")
            try:
                with direct.open(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"mlflow server did not answer on {base} within 90 s:\n"
                            f"{(folder / 'server.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield base
    finally:
        stop(proc)


def browse(browser: str, url: str, profile: Path, *extra: str, timeout: float = 120) -> str:
    """Run headless Chromium once on ``url``; its standard output (the DOM with --dump-dom)."""
    proc = subprocess.Popen([browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, url],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"headless Chromium did not finish {url} within {timeout} s")
    finally:
        stop(proc)
    return out.decode("utf-8", errors="replace")


def page(browser: str, url: str, profile: Path, must_show: list[str], tries: int = 3) -> str:
    """The rendered DOM of ``url`` once it shows every string of ``must_show`` (the app loads its
    runs asynchronously: a slow first load is tried again)."""
    dom = ""
    for _ in range(tries):
        dom = browse(browser, url, profile, "--dump-dom")
        if all(s in dom for s in must_show):
            break
    return dom


def check_view(browser: str, tracker: Tracker, server: str, view: str, runs: list, others: list,
               profile: Path, keep: Path | None = None) -> str:
    """One shared view on the page: every run of ``runs`` listed, none of ``others``, an avg_gap
    column whose cells (in page order) are the runs' Avg. Gap best first. Returns the DOM."""
    names = [r.info.run_name for r in runs]
    url = tracker.view_url(server, view)
    dom = page(browser, url, profile, names)
    if keep is not None:
        keep.write_text(dom)
    missing = [n for n in names if n not in dom]
    assert not missing, f"{view} view: runs not on the page {url} (DOM in {keep}): {missing}"
    assert 'col-id="metrics.`avg_gap`"' in dom, f"no avg_gap column in the {view} view"
    shown = [float(v) for v in AVG_GAP_CELL.findall(dom)]
    gaps = sorted(r.data.metrics["avg_gap"] for r in runs)
    assert shown == pytest.approx(gaps), f"{view} view: avg_gap cells, in page order, best first: {shown} vs {gaps}"
    assert not [r.info.run_name for r in others if r.info.run_name in dom], f"the {view} view lists its own runs only"
    return dom


def test_the_study_runs_and_avg_gap_in_the_mlflow_ui(browser, tiny, server, tmp_path, capsys):
    tracker = Tracker(tiny.uri, tiny.experiment)
    tracker.connect()
    final = tracker.children(tiny.study_run_id, "trial", "tags.stage = 'final'")
    search = tracker.children(tiny.study_run_id, "trial", "tags.stage = 'search'")
    cells = tracker.children(tiny.study_run_id, "cell")
    assert len(final) == 2 and len(search) == 4
    assert sorted(r.data.tags["cell"] for r in cells) == ["digits-cnn-lt0.1-g1/ft", "digits-cnn-lt0.1-g1/ga+falw"]
    profile = tmp_path / "profile"

    dom = check_view(browser, tracker, server, "final", final, search, profile, tmp_path / "final.html")
    assert "Sort: avg_gap" in dom, "the view ranks runs by avg_gap"
    check_view(browser, tracker, server, "search", search, final, profile)
    dom = check_view(browser, tracker, server, "cell", cells, final + search, profile, tmp_path / "cells.html")
    for column in ("avg_gap_std", "lr", "tau", "method", "falw"):
        assert f"`{column}`" in dom, f"no {column} column in the cell view"
    url = tracker.view_url(server, "cell")

    shot = tmp_path / "mlflow_ui.png"
    browse(browser, url, tmp_path / "profile", f"--screenshot={shot}")
    assert shot.exists(), "Chromium wrote no screenshot"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (2560, 1000)
    assert len(data) > 30_000, "a blank page compresses to almost nothing"
    copies = [Path(os.environ["FALW_TEST_ARTIFACTS"])] if os.environ.get("FALW_TEST_ARTIFACTS") else []
    for folder in copies:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, folder / "mlflow_ui.png")
    with capsys.disabled():
        print(f"\nMLflow UI screenshot of the cell view ({url}): {shot}"
              + "".join(f" (copied to {f / 'mlflow_ui.png'})" for f in copies))
