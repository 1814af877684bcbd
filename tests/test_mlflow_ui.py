"""The MLflow UI shows what a sweep recorded: headless Chromium on mlflow/server.sh after a real tiny sweep.

A temp SQLite store behind the project's server script, a sweep logging to it over HTTP, then the browser:
the runs table lists the parent and its trial runs with the objectives as numbers (the same numbers the
API returns), the compare view of two trials opens, and the parent's `frontier.png` renders.

Screenshots go to $MLFLOW_UI_SCREENSHOTS (else the test's tmp dir); with UPDATE_DOCS_SCREENSHOT=1 the
runs table is also written to docs/mlflow-ui.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import TINY
from tests.servers import mlflow_server

REPO = Path(__file__).resolve().parents[1]
DOCS_SCREENSHOT = REPO / "docs" / "mlflow-ui.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
EXPERIMENT = "rtdetr-ghost-search"
SWEEP = "ui-sweep"
SAMPLES = 2
OBJECTIVES = ("map50_95", "latency_ms", "gflops")
SITES = ("stage3",)  # the modes space's one site
# Wide attribute columns hidden from the runs table, so the objectives fit a 1280 px window.
HIDDEN_ATTRIBUTES = ("Dataset", "Source", "Models")
WINDOW = (1280, 800)
STARTUP_LIMIT_S = 120
UI_WAIT_S = 60  # the UI bundle is large and the CPU is shared with the server

pytestmark = pytest.mark.slow


def _skip_reason() -> str | None:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs the selenium package (the dev extras: pip install -e '.[dev]')"
    return None


def run_sweep(tmp: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "search.run", "--space", "modes", "--sampler", "grid"]
    cmd += ["--samples", str(SAMPLES), *TINY, "--name", SWEEP]
    cmd += ["--storage-path", str(tmp / "ray"), "--tracking-uri", tracking_uri]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


@contextmanager
def chromium(tmp: Path) -> Iterator:
    """Headless system Chromium through the system chromedriver (no driver or browser download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # The background-networking flags keep Chromium from calling out of this closed network.
    for flag in (
        "--headless",
        "--no-sandbox",  # runs as root in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    service = Service(str(CHROMEDRIVER), log_output=str(tmp / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        # The viewport itself is WINDOW (--window-size would include the window's frame).
        width, height = WINDOW
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition, what: str):
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # React re-renders the grid while data arrives: an element found a moment ago may be gone; look again.
    wait = WebDriverWait(
        driver, UI_WAIT_S, poll_frequency=0.5, ignored_exceptions=[StaleElementReferenceException]
    )
    try:
        return wait.until(condition)
    except TimeoutException:
        pytest.fail(f"the UI did not show {what} within {UI_WAIT_S} s (page {driver.current_url})")


def _close_assistant(driver) -> None:
    """Close MLflow's assistant side panel (it takes a third of the window); no-op when it is not there."""
    driver.execute_script(
        """
        for (const button of document.querySelectorAll("button[aria-label='Close']")) {
            let panel = button;
            for (let i = 0; i < 6 && panel; i++) panel = panel.parentElement;
            if (panel && panel.textContent.includes('MLflow Assistant')) { button.click(); return; }
        }
        """
    )


def _cell(driver, run_id: str, col_id: str):
    """The runs table's cell of one run and column (AG Grid renders a row once per pinned section)."""
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, f".ag-row[row-id='{run_id}'] .ag-cell[col-id=\"{col_id}\"]")
    return cells[0] if cells else None


def _cell_number(driver, run_id: str, col_id: str) -> list[float]:
    """A cell's number as a one-item list (truthy for a waiter even when it is 0.0); empty until it shows one."""
    cell = _cell(driver, run_id, col_id)
    try:
        return [float(cell.text.strip())] if cell is not None else []
    except ValueError:  # "-" while the run has no such metric
        return []


def _set_columns(driver, show: tuple[str, ...], hide: tuple[str, ...]) -> None:
    """Pick the runs table's columns the way a user does: the Columns selector, its search box, checkboxes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    button = _wait(
        driver,
        lambda d: next(
            (b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Columns"), None
        ),
        "the Columns button",
    )
    button.click()
    search = _wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "input[placeholder='Search columns']"),
        "the column search box",
    )[0]
    for name, wanted in [(n, True) for n in show] + [(n, False) for n in hide]:
        search.send_keys(Keys.CONTROL, "a")
        search.send_keys(name)
        # The search narrows the tree to the matching leaves (plus their group); the metric names are unique.
        node = _wait(
            driver,
            lambda d, name=name: next(
                (
                    n
                    for n in d.find_elements(By.CSS_SELECTOR, "[class*='tree-treenode']")
                    if n.text.strip() == name
                ),
                None,
            ),
            f"column {name!r} in the selector",
        )
        box = node.find_element(By.CSS_SELECTOR, "[class*='tree-checkbox']")
        if ("checkbox-checked" in box.get_attribute("class")) != wanted:
            box.click()
    search.send_keys(Keys.ESCAPE)


def _screenshot(driver, folder: Path, name: str) -> Path:
    path = folder / name
    driver.save_screenshot(str(path))
    return path


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_the_ui_shows_the_sweep(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import mlflow

    shots = Path(os.environ.get("MLFLOW_UI_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    with mlflow_server(
        tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "art", startup_limit_s=STARTUP_LIMIT_S
    ) as url:
        done = run_sweep(tmp_path, url)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

        # What the API says, to hold the UI against.
        client = mlflow.MlflowClient(tracking_uri=url)
        exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        everything = client.search_runs([exp_id], max_results=100)
        parents = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1, "one parent run per sweep"
        parent = parents[0]
        # one run per architecture under the sweep (its seeds' runs nest under it in turn)
        children = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == SAMPLES and all(c.data.tags["sweep.role"] == "architecture" for c in children)

        with chromium(tmp_path) as driver:
            try:
                _check_runs_table(driver, url, exp_id, parent, children, shots, done.stdout)
                _check_compare_view(driver, url, exp_id, children, shots)
                _check_frontier_artifact(driver, url, exp_id, parent, tmp_path, shots)
            except BaseException:
                _screenshot(driver, shots, "failure.png")
                raise


def _check_runs_table(driver, url: str, exp_id: str, parent, children, shots: Path, printed: str) -> None:
    from selenium.webdriver.common.by import By

    # The experiment as a user opens it: by the link the sweep printed, on the runs table ("Model training"
    # view; MLflow 3 opens an experiment on its GenAI views otherwise).
    (link,) = re.findall(r"the sweep's runs: (\S+)", printed)
    assert link == f"{url}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    driver.get(link)
    parent_id = parent.info.run_id
    _wait(driver, lambda d: _cell(d, parent_id, "attributes.`Run Name`"), "the parent run's row")
    _close_assistant(driver)
    assert SWEEP in _cell(driver, parent_id, "attributes.`Run Name`").text

    _set_columns(driver, show=(*SITES, *OBJECTIVES), hide=HIDDEN_ATTRIBUTES)
    # Architecture runs are nested under the parent: expand it with the button in its name cell.
    _cell(driver, parent_id, "attributes.`Run Name`").find_element(By.TAG_NAME, "button").click()

    for child in children:
        run_id = child.info.run_id
        name = _wait(
            driver, lambda d, r=run_id: _cell(d, r, "attributes.`Run Name`"), f"architecture row {run_id}"
        )
        assert child.info.run_name in name.text  # "unmodified base", "stage3 ori (hand)"
        for site in SITES:  # the choices, as the user reads them
            choice = _wait(
                driver, lambda d, r=run_id, c=f"params.`{site}`": _cell(d, r, c), f"{site} of {run_id}"
            )
            assert choice.text.strip() == child.data.params[site]
        for metric in OBJECTIVES:
            col = f"metrics.`{metric}`"
            (value,) = _wait(
                driver,
                lambda d, r=run_id, c=col: _cell_number(d, r, c),
                f"{metric} of architecture {run_id} as a number",
            )
            # The number shown is the one stored, the mean over the seeds (the table prints it in full).
            assert value == pytest.approx(child.data.metrics[metric], rel=1e-3), metric
    time.sleep(1)  # let the expanded rows and the header settle before the picture
    _screenshot(driver, shots, "runs-table.png")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        _screenshot(driver, DOCS_SCREENSHOT.parent, DOCS_SCREENSHOT.name)


def _check_compare_view(driver, url: str, exp_id: str, children, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    ids = [c.info.run_id for c in children[:2]]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp_id])})
    driver.get(f"{url}/#/compare-runs?{query}")
    _wait(
        driver, lambda d: "Comparing 2 Runs" in d.find_element(By.TAG_NAME, "body").text, "the compare view"
    )
    # The run details table lists both runs, with their ids and names, and their metrics.
    _wait(
        driver,
        lambda d: all(i in d.find_element(By.TAG_NAME, "body").text for i in ids),
        "both run ids in the compare view",
    )
    _close_assistant(driver)
    body = driver.find_element(By.TAG_NAME, "body").text
    for child in children[:2]:
        assert child.info.run_name in body
    assert "latency_ms" in body and "gflops" in body
    # the parallel-coordinates plot starts on what a user compares: the site choices and an objective
    shown = body.split("Parameters:", 1)[1].split("Clear All", 1)[0]
    params, metrics = (part.split() for part in shown.split("Metrics:", 1))
    assert params == list(SITES), shown
    assert metrics and metrics[0] in OBJECTIVES, shown
    _screenshot(driver, shots, "compare.png")


def _check_frontier_artifact(driver, url: str, exp_id: str, parent, tmp: Path, shots: Path) -> None:
    parent_id = parent.info.run_id
    driver.get(f"{url}/#/experiments/{exp_id}/runs/{parent_id}/artifacts/frontier.png")
    # The preview fetches the file through the server and shows it from a blob: URL once decoded.
    images = _wait(
        driver,
        lambda d: d.execute_script(
            "return [...document.images]"
            ".filter(i => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:'))"
            ".map(i => [i.naturalWidth, i.naturalHeight])"
        ),
        "the rendered frontier.png",
    )
    _close_assistant(driver)
    # The image shown is the stored frontier.png: same pixel size as the file in the artifact folder.
    (stored,) = list((tmp / "art").rglob(f"{parent_id}/artifacts/frontier.png"))
    assert list(_png_size(stored)) in images
    _screenshot(driver, shots, "frontier.png")
