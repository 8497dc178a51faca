"""The explorer in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against a uvicorn server this module starts on a free 127.0.0.1 port. Every page it
visits is saved as a screenshot in the test's tmp folder."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the explorer needs the 'explore' extra (fastapi, uvicorn, jinja2)")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from explore_data import build_explore_data, explore_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.realdata]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# The flags a headless Chromium needs here: no sandbox as root, and none of its background
# networking, which misbehaves on a closed network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1100")


@pytest.fixture(scope="module")
def data(coco128, shared_tmp) -> dict[str, Path]:
    return build_explore_data(coco128, shared_tmp / "explore-data")


@pytest.fixture(scope="module")
def server(data):
    """The explorer served by uvicorn in a thread, on a port the OS picked (no race: we bind it)."""
    from glocon.explore.serve import make_server, url_of

    srv, sock = make_server(explore_config(data, port=0))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start within 30 s"
    yield url_of(sock).rstrip("/")
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium / chromedriver not found on PATH (Debian: apt-get install -y chromium chromium-driver; .ci/run does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(180)
    yield driver
    driver.quit()


def wait(browser, condition, timeout: float = 180):
    return WebDriverWait(browser, timeout).until(condition)


def loaded(browser, img) -> bool:
    return browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)


def shot(browser, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 0
    return path


def cli_hits(bank: Path, key: str, point: tuple[int, int] | None, out: Path, box: list[int] | None = None) -> dict:
    """`glocon bank query --config <bank>/config.resolved.yaml key=... point=[x,y]` (or box=[...]), as the CLI runs it."""
    spec = importlib.util.spec_from_file_location("job_query_bank", REPO / "jobs" / "query_bank.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    where = f"point=[{point[0]},{point[1]}]" if point is not None else f"box=[{','.join(map(str, box))}]"
    argv = ["--config", str(bank / "config.resolved.yaml"), f"bank={bank}", f"key={key}", where, f"out={out}"]
    assert job.main(argv) == 0
    return json.loads((out / "hits.json").read_text())


def shown_hits(browser, bank: str) -> list[dict]:
    panel = browser.find_element(By.CSS_SELECTOR, f'section.panel[data-bank="{bank}"]')
    return [{"id": int(a.get_attribute("data-id")), "key": a.get_attribute("data-key"), "superpixel": int(a.get_attribute("data-superpixel")),
             "score": float(a.get_attribute("data-score")), "rank": int(a.get_attribute("data-rank"))}
            for a in panel.find_elements(By.CSS_SELECTOR, "a.hit")]  # fmt: skip


def open_first_sample(browser, server: str, tmp_path: Path) -> str:
    browser.get(server + "/")
    shot(browser, tmp_path, "index")
    browser.find_element(By.CSS_SELECTOR, 'a.shards-link[href="/shards/train"]').click()
    thumb = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "a.thumb")))
    wait(browser, lambda b: all(loaded(b, i) for i in b.find_elements(By.CSS_SELECTOR, "a.thumb img")))
    shot(browser, tmp_path, "shards")
    key = thumb.get_attribute("data-key")
    thumb.click()
    view = wait(browser, EC.presence_of_element_located((By.ID, "view")))
    wait(browser, lambda b: loaded(b, view))
    shot(browser, tmp_path, "sample")
    return key


def click_at_pixel(browser, px: int, py: int) -> None:
    """Click the displayed image over image pixel (px, py) (its centre), whatever the enlargement."""
    view = browser.find_element(By.ID, "view")
    w, h = int(view.get_attribute("data-w")), int(view.get_attribute("data-h"))
    size = view.size
    sx, sy = size["width"] / w, size["height"] / h
    # Selenium 4 offsets are from the element's centre.
    dx, dy = (px + 0.5) * sx - size["width"] / 2, (py + 0.5) * sy - size["height"] / 2
    ActionChains(browser).move_to_element_with_offset(view, int(round(dx)), int(round(dy))).click().perform()


def test_a_click_on_a_sample_shows_the_hits_glocon_bank_query_writes_for_that_point(browser, server, data, tmp_path):
    key = open_first_sample(browser, server, tmp_path)
    click_at_pixel(browser, 41, 29)
    wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "section.panel a.hit")))
    shot(browser, tmp_path, "sample-hits")
    query = browser.find_element(By.CSS_SELECTOR, 'section.panel[data-bank="a"] p.query')
    point = tuple(int(v) for v in query.get_attribute("data-point").split(","))
    assert point == (41, 29)  # the page turned the click into the image pixel under the mouse
    written = cli_hits(data["bank_a"], key, point, tmp_path / "cli")
    want = [{k: h[k] for k in ("id", "key", "superpixel", "score", "rank")} for h in written["hits"]]
    assert shown_hits(browser, "a") == want
    # Every hit tile is drawn.
    wait(browser, lambda b: all(loaded(b, i) for i in b.find_elements(By.CSS_SELECTOR, "a.hit img")))


def test_a_hit_clicked_asks_again_from_its_superpixel(browser, server, data, tmp_path):
    key = open_first_sample(browser, server, tmp_path)
    click_at_pixel(browser, 20, 20)
    first = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "section.panel a.hit")))
    hit_key, hit_sp = first.get_attribute("data-key"), first.get_attribute("data-superpixel")
    first.click()
    wait(browser, lambda b: "superpixel=" in b.current_url and b.find_elements(By.CSS_SELECTOR, "section.panel p.query"))
    shot(browser, tmp_path, "hit-again")
    assert browser.find_element(By.ID, "page").get_attribute("data-key") == hit_key != key
    assert browser.find_element(By.CSS_SELECTOR, "section.panel p.query").get_attribute("data-superpixel") == hit_sp


def test_dragging_a_box_asks_for_the_box_and_shows_the_hits_the_cli_writes_for_it(browser, server, data, tmp_path):
    key = open_first_sample(browser, server, tmp_path)
    view = browser.find_element(By.ID, "view")
    w = int(view.get_attribute("data-w"))
    scale = view.size["width"] / w
    start = (int(round((10.5 * scale) - view.size["width"] / 2)), int(round((12.5 * scale) - view.size["height"] / 2)))
    ActionChains(browser).move_to_element_with_offset(view, *start).click_and_hold().move_by_offset(int(30 * scale), int(20 * scale)).release().perform()
    query = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, 'section.panel[data-bank="a"] p.query')))
    shot(browser, tmp_path, "box")
    box = [int(v) for v in query.get_attribute("data-box").split(",")]
    assert query.get_attribute("data-kind") == "box" and abs(box[0] - 10) <= 1 and abs(box[1] - 12) <= 1 and box[2] > box[0] + 20
    written = cli_hits(data["bank_a"], key, None, tmp_path / "cli", box=box)
    assert [h["id"] for h in shown_hits(browser, "a")] == [h["id"] for h in written["hits"]]


def test_toggling_an_overlay_changes_the_image(browser, server, tmp_path):
    open_first_sample(browser, server, tmp_path)
    view = browser.find_element(By.ID, "view")
    before_src, before = view.get_attribute("src"), Image.open(io.BytesIO(view.screenshot_as_png)).convert("RGB")
    for overlay in ("slic", "mask"):
        browser.find_element(By.ID, f"overlay-{overlay}").click()
        wait(browser, lambda b: overlay in b.find_element(By.ID, "view").get_attribute("src") and loaded(b, b.find_element(By.ID, "view")))
        after = Image.open(io.BytesIO(browser.find_element(By.ID, "view").screenshot_as_png)).convert("RGB")
        assert after.size == before.size and (np.asarray(after) != np.asarray(before)).any(), overlay
        shot(browser, tmp_path, f"overlay-{overlay}")
        before = after
    assert view.get_attribute("src") != before_src
    kept = parse_qs(urlparse(browser.current_url).query)["overlay"][0]
    assert set(kept.split(",")) == {"slic", "mask"}  # in the page's URL, so a reload keeps them


def test_two_banks_side_by_side_each_show_their_own_answer(browser, server, data, tmp_path):
    key = open_first_sample(browser, server, tmp_path)
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "bank2")).select_by_value("b")
    wait(browser, lambda b: "bank2=b" in b.current_url)
    click_at_pixel(browser, 50, 40)
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "section.panel")) == 2 and b.find_elements(By.CSS_SELECTOR, 'section.panel[data-bank="b"] a.hit'))
    shot(browser, tmp_path, "side-by-side")
    for bank, folder in (("a", data["bank_a"]), ("b", data["bank_b"])):
        written = cli_hits(folder, key, (50, 40), tmp_path / f"cli-{bank}")
        assert [h["id"] for h in shown_hits(browser, bank)] == [h["id"] for h in written["hits"]], bank


def test_a_fig5_row_opens_from_the_evaluation_page(browser, server, tmp_path):
    browser.get(server + "/")
    browser.find_element(By.CSS_SELECTOR, 'a.eval-link[href="/eval/qgnet"]').click()
    link = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "a.episode-link")))
    shot(browser, tmp_path, "eval")
    link.click()
    fig = wait(browser, EC.presence_of_element_located((By.ID, "fig5")))
    wait(browser, lambda b: loaded(b, fig))
    shot(browser, tmp_path, "fig5-row")
    width, height = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", fig)
    assert width > 4 * height  # one row of the six Fig. 5 panels
    assert "prior" in browser.find_element(By.ID, "row-info").text


def test_a_bad_key_is_reported_in_the_page_and_the_server_keeps_serving(browser, server, tmp_path):
    browser.get(server + "/sample?shards=train&key=coco128/no-such-photo")
    error = wait(browser, EC.presence_of_element_located((By.ID, "error")))
    shot(browser, tmp_path, "bad-key")
    assert "'coco128/no-such-photo' is not in shards set 'train'" in error.text
    browser.get(server + "/files/results/probe/..%2F..%2Fetc%2Fpasswd")
    assert "refused" in wait(browser, EC.presence_of_element_located((By.ID, "error"))).text
    shot(browser, tmp_path, "refused-path")
    browser.get(server + "/")
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == "glocon explore"
