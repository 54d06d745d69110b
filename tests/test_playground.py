"""The web playground (GET /ui) in a real headless browser: Debian's chromium driven by Selenium
through chromium-driver, against a real server on loopback running the tiny random Llama.

``bash scripts/install_test_services.sh`` installs chromium and chromium-driver (``make test`` runs
it); without them the browser test skips locally and fails under ``CI=true``. The screenshot of the
finished run is kept under pytest's tmp path, and copied to ``$REWOO_TEST_ARTIFACTS`` (or ``$OUT``)
when one is set.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from serve.backends.hf import TransformersBackend, load_model
from serve.config import ServeConfig
from serve.local import LocalServer
from serve.pipeline_route import add_pipeline_routes
from serve.playground import add_playground_routes
from toolkit import Toolbox, tool

KEY = "sk-playground-test"


@tool
def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: the text
    """
    return text.upper()


@tool
def count_words(text: str) -> str:
    """Count the words of a text.

    Args:
        text: the text
    """
    return str(len(text.split()))


@pytest.fixture(scope="module")
def ui_server(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    from serve.constraints import build_processor
    backend = TransformersBackend(model, tokenizer, "tiny", context_length=2048, cache_tokens=8192,
                                  constraint_factory=build_processor)
    config = ServeConfig(model=str(tiny_model_dir), context_length=2048, api_key=KEY)
    with LocalServer(backend, config, routes=[add_pipeline_routes, add_playground_routes]) as s:
        s.app.state.pipeline_toolbox = Toolbox([shout, count_words])
        yield s


def test_ui_is_static_open_and_locked_down(ui_server):
    page = httpx.get(f"{ui_server.url}/ui")  # no key: the page is static; what it does needs the key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert "/ui/app.js" in links and all(link.startswith("/ui/") for link in links)  # nothing from a CDN
    js = httpx.get(f"{ui_server.url}/ui/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text  # server text goes in as text, never as HTML
    # only the page's files are open; any other path keeps the key rules, and is no file of ours
    assert httpx.get(f"{ui_server.url}/ui/nothing.js").status_code == 401
    assert httpx.get(f"{ui_server.url}/ui/nothing.js", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
    assert httpx.get(f"{ui_server.url}/v1/pipeline/tools").status_code == 401


def _chromium():
    """The chromium and chromedriver binaries and selenium, or a skip (a failure under CI=true)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, found in (("chromium", chromium), ("chromium-driver", driver)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = (f"the playground's browser test needs {', '.join(missing)}: run `bash "
                   "scripts/install_test_services.sh` (as root, with apt-get) or `make test`")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


def _keep(screenshot: Path) -> None:
    out = os.environ.get("REWOO_TEST_ARTIFACTS") or os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(out) / screenshot.name)


def test_playground_runs_a_task_in_a_real_browser(ui_server, tmp_path):
    chromium, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        wait = WebDriverWait(browser, 180)
        browser.get(f"{ui_server.url}/ui")
        # the server wants a key: the page asks for it, then lists the server's tools and modes
        wait.until(lambda b: b.find_element(By.ID, "key-form").is_displayed())
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.ID, "key-save").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#tools input")) == 2)
        assert [e.get_attribute("value") for e in browser.find_elements(By.CSS_SELECTOR, "#tools input")] == \
            ["shout", "count_words"]
        assert [e.get_attribute("value") for e in browser.find_elements(By.CSS_SELECTOR, "#mode option")] == \
            ["rewoo", "react", "code"]
        browser.find_element(By.ID, "max-tokens").clear()
        browser.find_element(By.ID, "max-tokens").send_keys("128")
        browser.find_element(By.ID, "task").send_keys("Shout hello and count the words.")
        browser.find_element(By.ID, "run").click()
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-run") in ("done", "error"))
        error = browser.find_element(By.ID, "error").text
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-run") == "done", error
        nodes = browser.find_elements(By.CSS_SELECTOR, "#dag g.node")
        states = {n.get_attribute("data-var"): n.get_attribute("data-state") for n in nodes}
        assert states and all(s in ("ok", "error", "skipped") for s in states.values()), states
        assert browser.find_element(By.ID, "answer-box").is_displayed()
        assert "completion tokens" in browser.find_element(By.ID, "stats").text
        # a node opens its evidence and timing (the click redraws the graph: read the node first)
        first = nodes[0].get_attribute("data-var")
        nodes[0].click()
        wait.until(lambda b: b.find_element(By.ID, "detail").is_displayed())
        assert browser.find_element(By.ID, "detail-title").text.startswith(first)
        fields = browser.find_element(By.ID, "detail-fields").text
        assert "status" in fields and states[first] in fields
        if states[first] != "skipped":
            assert "took" in fields
        assert browser.find_element(By.ID, "detail-evidence").text != "(no evidence yet)"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#history li")) == 1  # kept in localStorage
        shot = tmp_path / "playground.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 0
        _keep(shot)
    finally:
        browser.quit()
