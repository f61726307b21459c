"""The explorer as a web app in a real browser (issue 19): `mmss explore` serves a tiny demo runs
folder with Voila on 127.0.0.1; headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium, no browser download) selects a product and a review and checks that the review table
and the trajectory change, that the images load, that a run without SSP records is a message
(not a traceback), and that nothing was written into the runs folder. Screenshots go to the
test's tmp folder (and to $MMSS_EXPLORE_SHOTS when set).

Skipped, with the reason, where Chromium, its driver, Selenium or Voila is missing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_explore import build_small_runs, tree_digest

pytestmark = pytest.mark.slow

CHROMIUM = next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
        if p and Path(p).exists()
    ),
    None,
)
DRIVER = next(
    (p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "") if p and Path(p).exists()), None
)
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1500,2000",
)
RENDER_S = 180  # first render: kernel start + imports on a loaded 2-core machine
STEP_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_stack():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "no browser: Debian's chromium and chromium-driver are not installed "
            "(apt-get install -y chromium chromium-driver; .ci/run does it)"
        )
    for mod in ("selenium", "voila", "ipywidgets"):
        pytest.importorskip(mod, reason=f"{mod} is not installed (pip install -e '.[notebooks,test]')")
    return CHROMIUM, DRIVER


@pytest.fixture(scope="module")
def served(browser_stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("explore_web")
    data_root, runs_root = build_small_runs(root)
    port = _free_port()
    log = open(root / "explore.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmss_lib",
            "explore",
            "--runs",
            str(runs_root),
            "--data",
            str(data_root),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # its own process group: voila goes with it
    url = None  # the printed address, with its token (issue 38: the server asks for one)
    try:
        deadline = time.time() + 90
        while url is None:
            log.flush()
            m = re.search(r"at (http://127\.0\.0\.1:\d+/\?token=[0-9a-f]+)\s", (root / "explore.log").read_text())
            if m:
                url = m.group(1)
            elif proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mmss explore printed no address:\n{(root / 'explore.log').read_text()[-3000:]}")
            else:
                time.sleep(0.2)
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"mmss explore did not serve {url}:\n{(root / 'explore.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, data_root, runs_root, root
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
    assert "127.0.0.1" in (root / "explore.log").read_text()


@pytest.fixture
def driver(browser_stack, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_stack
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    d.set_page_load_timeout(120)
    yield d
    d.quit()


def _css(d, sel):
    return d.find_elements("css selector", sel)


def _wait(d, cond, timeout, what):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # the widgets re-render their DOM: an element can go stale between two reads
        return WebDriverWait(
            d,
            timeout,
            poll_frequency=0.25,
            ignored_exceptions=(StaleElementReferenceException, NoSuchElementException, IndexError),
        ).until(lambda _: cond())
    except Exception:  # noqa: BLE001 - fail with what the page shows
        body = d.find_element("tag name", "body").text[-2000:]
        pytest.fail(f"timed out ({timeout} s) waiting for {what}; the page shows:\n{body}")


def _choose(d, widget_class, predicate):
    """Pick the first option of the <select> inside ``.mmss-{widget_class}`` whose text satisfies
    ``predicate``; returns the option's text."""
    from selenium.webdriver.support.ui import Select

    sel = Select(_css(d, f".mmss-{widget_class} select")[0])
    for o in sel.options:
        if predicate(o.text):
            text = o.text
            sel.select_by_visible_text(text)
            return text
    pytest.fail(f"no option of {widget_class} matches; options: {[o.text for o in sel.options]}")


def _html(d, cls):
    return d.execute_script(f"const e = document.querySelector('.mmss-{cls}'); return e ? e.innerHTML : '';")


def _attr(d, selector, name):
    return d.execute_script(
        f"const e = document.querySelector('{selector}'); return e ? e.getAttribute('{name}') : null;"
    )


def _shot(d, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    height = d.execute_script("return Math.max(document.body.scrollHeight, 1000)")
    d.set_window_size(1500, min(int(height) + 100, 4000))
    d.save_screenshot(str(path))
    shots = os.environ.get("MMSS_EXPLORE_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(shots) / path.name)


def test_explorer_in_a_real_browser(served, driver, tmp_path):
    from mmss_lib.data.mrhp import load_mrhp

    url, data_root, runs_root, _ = served
    before = tree_digest(runs_root)
    driver.get(url)
    _wait(driver, lambda: _css(driver, ".mmss-products select option"), RENDER_S, "the product list")
    assert "Traceback" not in driver.page_source

    # training split: products with images and several reviews, pseudo labels
    _choose(driver, "split", lambda t: t == "train")
    products, reviews = load_mrhp(data_root, "demo", "home", "train")
    n = reviews.groupby("product_id").size()
    with_images = products[(products["image_files"].map(len) > 0) & products["product_id"].map(n).gt(2)]
    pid = with_images["product_id"].iloc[-1]
    _wait(
        driver,
        lambda: any(o.text.endswith(pid) for o in _css(driver, ".mmss-products option")),
        STEP_S,
        "the training products",
    )
    table_before = _html(driver, "table")
    _choose(driver, "products", lambda t: t.endswith(pid))
    _wait(
        driver,
        lambda: pid in _html(driver, "product-view") and _html(driver, "table") != table_before,
        STEP_S,
        f"product {pid}'s review table",
    )
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('.mmss-review-table tr[data-review]'))"
        ".map(r => r.getAttribute('data-review'));"
    )
    assert sorted(rows) == sorted(reviews.loc[reviews["product_id"] == pid, "review_id"])
    # the images load: every thumbnail of the product view decoded to a real picture
    _wait(
        driver,
        lambda: driver.execute_script(
            "const im = document.querySelectorAll('.mmss-product-view img.mmss-thumb');"
            "return im.length > 0 && Array.from(im).every(i => i.complete && i.naturalWidth > 0);"
        ),
        STEP_S,
        "the product images",
    )
    # a review: the trajectory changes
    traj_before = _attr(driver, ".mmss-trajectory img", "data-review")
    assert traj_before
    rid = _choose(driver, "reviews", lambda t: traj_before not in t).split()[1]
    _wait(
        driver,
        lambda: _attr(driver, ".mmss-trajectory img", "data-review") == rid,
        STEP_S,
        f"review {rid}'s trajectory",
    )
    assert driver.execute_script(
        "const i = document.querySelector('.mmss-trajectory img');return i.complete && i.naturalWidth > 100;"
    )
    assert f"review {rid}" in _html(driver, "detail") and "χ_g" in _html(driver, "detail")
    assert _attr(driver, ".mmss-review-table tr[data-selected]", "data-review") == rid  # the selected row
    _shot(driver, tmp_path / "explore_review_trajectory.png")

    # a second run beside the first, on test: ranks of both, where they differ
    _choose(driver, "split", lambda t: t == "test")
    _wait(driver, lambda: "run rank" in _html(driver, "table"), STEP_S, "the test split")
    _choose(driver, "other", lambda t: t.startswith("length"))
    _wait(driver, lambda: "rank (length seed0)" in _html(driver, "table"), STEP_S, "the second run's ranks")
    _wait(driver, lambda: "differ at" in _html(driver, "summary"), STEP_S, "the comparison line")
    _shot(driver, tmp_path / "explore_product_two_runs.png")

    # bad input in the UI: a run without SSP records on train is a message, not a traceback
    _choose(driver, "split", lambda t: t == "train")
    _choose(driver, "run", lambda t: "(wo_d)" in t)
    _wait(driver, lambda: "no SSP-Label records" in _html(driver, "message"), STEP_S, "the no-records message")
    assert "Traceback" not in driver.page_source
    assert (tmp_path / "explore_review_trajectory.png").stat().st_size > 10_000
    assert tree_digest(runs_root) == before  # nothing written
