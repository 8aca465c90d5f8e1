"""The demo page in a real headless browser: Debian's chromium and chromedriver, driven by
selenium, against a live uvicorn server (in a thread) on the tiny model.

Skipped, with the reason, where chromium, chromedriver or selenium are missing (`apt install
chromium chromium-driver`), except with FASTCLIPSEG_REQUIRE_BROWSER=1 (CI sets it), where that
is a failure: the page must be tested in a browser there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

REQUIRED = os.environ.get("FASTCLIPSEG_REQUIRE_BROWSER") == "1"

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None

# Headless in a container; the last ones stop Chromium from calling Google's services, whose
# connections are refused here (and would only slow it down anywhere).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,900"]
UPLOAD_LIMIT = 200_000


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason}; FASTCLIPSEG_REQUIRE_BROWSER=1 says the browser test must run", pytrace=False)
    pytest.skip(f"{reason} (apt install chromium chromium-driver; pip install selenium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if webdriver is None:
        unavailable("selenium is not installed")
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        unavailable('the demo extra is not installed (pip install "fastclipseg[demo]")')
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        unavailable(f"{'chromium' if chromium is None else 'chromedriver'} is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")  # a fresh profile
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


@pytest.fixture(scope="module")
def live_demo(tiny_segmenter, demo_images):
    """The demo app served by uvicorn on a free port of 127.0.0.1, as `fastclipseg demo` serves it."""
    import uvicorn
    from fastclipseg.demo import listen, url_of
    from fastclipseg.demo.app import create_app

    listener = listen("127.0.0.1", 0)
    app = create_app(tiny_segmenter, images_dir=demo_images, max_upload_bytes=UPLOAD_LIMIT,
                     allowed_hosts={"127.0.0.1"})
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the demo server did not start"
        time.sleep(0.02)
    yield url_of(listener)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser, live_demo):
    """The demo page, freshly loaded (a new tab session) and ready."""
    browser.get(live_demo)
    wait(browser, lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready",
         "the page to start")
    browser.get_log("browser")  # start each test with an empty console
    return browser


def wait(browser, condition, what: str, timeout: float = 20):
    return WebDriverWait(browser, timeout).until(lambda _: condition(), message=f"waiting for {what}")


def element(browser, id: str):
    return browser.find_element(By.ID, id)


def loaded_width(browser, id: str) -> int:
    """The natural width of image `id` once it has loaded (0 while loading or broken)."""
    return browser.execute_script("const img = document.getElementById(arguments[0]);"
                                  "return img.complete ? img.naturalWidth : 0;", id)


def type_into(browser, id: str, text: str) -> None:
    field = element(browser, id)
    field.clear()
    field.send_keys(text + "\n")  # Enter submits


def texts(browser, selector: str) -> list[str]:
    """The text of every element matching `selector`, read in one step: the page redraws its lists
    on each change, so elements found in one call may be gone by the next."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), (e) => e.textContent);", selector)


def legend_prompts(browser) -> list[str]:
    return texts(browser, "#legend .prompt")


def history(browser) -> list[str]:
    return texts(browser, "#history li")


def swatch_colours(browser) -> list[str]:
    return browser.execute_script("return Array.from(document.querySelectorAll('#legend .swatch'),"
                                  "(e) => getComputedStyle(e).backgroundColor);")


def fetch_status(browser, url: str) -> list:
    """[status, content type] of a GET of `url` from the page (as the browser would download it)."""
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then((r) => done([r.status, r.headers.get('content-type')]),"
        "                         (e) => done([0, String(e)]));",
        url)


def console_errors(browser) -> list[dict]:
    """Script errors and blocked resources (e.g. by the content security policy); a failed
    request's own line (an expected 4xx) is not one."""
    return [entry for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and entry.get("source") != "network"]


def test_upload_prompt_refine_undo_reset(page, demo_images):
    element(page, "file").send_keys(str(demo_images / "street.png"))
    wait(page, lambda: element(page, "image-info").text == "street.png: 120 × 90", "the image to open")
    wait(page, lambda: loaded_width(page, "overlay") == 120, "the image to show")
    assert not element(page, "heatmap").is_displayed() and not element(page, "downloads").is_displayed()

    type_into(page, "prompt", "a dog")
    wait(page, lambda: legend_prompts(page) == ["a dog"], "the legend")
    wait(page, lambda: "v=1" in element(page, "overlay").get_attribute("src") and loaded_width(page, "overlay") == 120,
         "the overlay")
    wait(page, lambda: loaded_width(page, "heatmap") == 120, "the heat-map")
    [score] = texts(page, "#legend .score")
    assert re.fullmatch(r"[01]\.\d\d", score)
    assert swatch_colours(page) == ["rgb(31, 119, 180)"]  # the overlay's colour for the first prompt
    assert history(page) == ["a dog"]
    for link, kind in (("download-masks", "application/zip"), ("download-json", "application/json"),
                       ("download-coco", "application/json")):
        anchor = element(page, link)
        assert anchor.is_displayed() and anchor.get_attribute("download") is not None
        assert fetch_status(page, anchor.get_attribute("href")) == [200, kind]

    type_into(page, "refine-phrase", "exclude the collar")
    wait(page, lambda: legend_prompts(page) == ["(a dog) AND NOT (the collar)"], "the refined legend")
    assert history(page) == ["a dog", "(a dog) AND NOT (the collar)"]
    assert texts(page, "#history li.current") == ["(a dog) AND NOT (the collar)"]
    wait(page, lambda: loaded_width(page, "overlay") == 120, "the refined overlay")

    element(page, "undo").click()
    wait(page, lambda: legend_prompts(page) == ["a dog"], "the legend after undo")
    assert history(page) == ["a dog"]

    type_into(page, "prompt", "a dog OR a cat {+5}")
    wait(page, lambda: legend_prompts(page) == ["a dog OR a cat {+5}"], "the expression's legend")
    element(page, "reset").click()
    wait(page, lambda: legend_prompts(page) == [] and history(page) == [], "the reset")
    assert not element(page, "downloads").is_displayed() and element(page, "undo").get_attribute("disabled")
    assert not element(page, "error").is_displayed()
    assert console_errors(page) == []


def test_several_prompts_one_per_line(page, demo_images):
    element(page, "file").send_keys(str(demo_images / "street.png"))
    wait(page, lambda: not element(page, "segment").get_attribute("disabled"), "the image to open")
    prompt = element(page, "prompt")
    prompt.send_keys("a dog")
    prompt.send_keys(Keys.SHIFT, "\n")  # Shift+Enter: a new line, not a submit
    prompt.send_keys("red\n")
    wait(page, lambda: legend_prompts(page) == ["a dog", "red"], "two legend entries")
    assert swatch_colours(page) == ["rgb(31, 119, 180)", "rgb(255, 127, 14)"]
    assert console_errors(page) == []


def test_errors_are_shown_in_the_page(page, demo_images, tmp_path):
    element(page, "file").send_keys(str(demo_images / "notes.txt"))
    wait(page, lambda: element(page, "error").is_displayed(), "the error")
    assert "notes.txt: not a readable image" in element(page, "error").text

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > UPLOAD_LIMIT
    element(page, "file").send_keys(str(big))  # refused by the page before uploading
    wait(page, lambda: "upload limit" in element(page, "error").text, "the size error")
    page.execute_script("page.config.max_upload_bytes = 1e9")  # now the server must refuse it
    element(page, "file").send_keys(str(big))
    wait(page, lambda: "200000 bytes (start it with a larger --max-upload-mb)" in element(page, "error").text,
         "the server's 413")

    element(page, "file").send_keys(str(demo_images / "street.png"))
    wait(page, lambda: element(page, "image-info").text.startswith("street.png"), "the image to open")
    assert not element(page, "error").is_displayed()
    type_into(page, "prompt", "a dog AND (a cat")
    wait(page, lambda: element(page, "error").is_displayed(), "the expression error")
    text = element(page, "error").text
    assert "column" in text and "^" in text and "Traceback" not in text
    assert console_errors(page) == []


def test_pick_an_image_from_the_folder(page):
    options = [option.text for option in Select(element(page, "examples")).options]
    assert options == ["more/room.jpg", "street.png"]
    Select(element(page, "examples")).select_by_visible_text("more/room.jpg")
    element(page, "open-example").click()
    wait(page, lambda: element(page, "image-info").text == "more/room.jpg: 48 × 64", "the folder's image")
    type_into(page, "prompt", "a cat")
    wait(page, lambda: legend_prompts(page) == ["a cat"] and loaded_width(page, "overlay") == 48, "the result")
    assert console_errors(page) == []
