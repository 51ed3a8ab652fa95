"""The chat in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via Selenium.

Two tabs of one browser: the first logs in through the login form (the room sends it
there first), the second opens the same room with the same session; a line typed in the
first appears in the second, a background task started in the second reports its
result in the first, a clap on the home page of one tab moves the other's counter (its
long-poll answered), and the statistics page refreshes. Screenshots of the pages go to
the artifacts folder (``test-artifacts/`` at the top of the repository, or
``$IPC_TEST_ARTIFACTS``), printed in the summary.

Nothing is downloaded: the system ``/usr/bin/chromedriver`` is named to Selenium (its
Selenium Manager is switched off with ``SE_OFFLINE``), and the browser is
``/usr/bin/chromium``. Skipped, saying which, where either or Selenium is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat_support import PASSWORD, ChatSite, running_chat_site
from tests.django_site.environment import REPO
from tests.support import unique_prefix
from tests.worker_support import ipc_layer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(240)]

for _path, _package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
    if not (os.path.exists(_path) and os.access(_path, os.X_OK)):
        pytest.skip(f"{_path} is absent: apt-get install {_package} for the browser test", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[tests]')")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT = 30


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("IPC_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatSite]:
    with running_chat_site(ipc_layer(unique_prefix()), tmp_path_factory.mktemp("chat-browser")) as running:
        yield running


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never fetches a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900",
                f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def wait(driver: Any, what: str, check: Callable[[Any], Any]) -> Any:
    return WebDriverWait(driver, WAIT).until(check, message=f"{what} (within {WAIT} s)")


def group_size(site: ChatSite, group: str) -> int:
    import httpx

    with httpx.Client(base_url=site.url, timeout=30) as client:
        return int(client.get("/stats.json").json()["groups"].get(group, 0))


def log_text(driver: Any) -> str:
    return str(driver.find_element(By.ID, "log").text)


def connected(driver: Any) -> None:
    wait(driver, "the room's socket connects", lambda d: d.find_element(By.ID, "status").text == "connected")


def test_two_tabs_chat_and_a_task(site: ChatSite, browser: Any, report_line: Callable[[str], None]) -> None:
    room = f"{site.url}/room/browser/"
    browser.get(room)
    wait(browser, "the room sends an anonymous visitor to the login form",
         lambda d: "/accounts/login/" in d.current_url)
    browser.find_element(By.ID, "id_username").send_keys("alice")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    wait(browser, "the login lands on the room", lambda d: d.current_url == room)
    assert browser.find_element(By.ID, "username").text == "alice"
    connected(browser)
    first = browser.current_window_handle

    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    browser.get(room)
    connected(browser)

    browser.switch_to.window(first)
    text = "hello from the first tab"
    field = browser.find_element(By.ID, "text")
    field.send_keys(text)
    field.send_keys(Keys.ENTER)
    wait(browser, "the sender's tab shows the line", lambda d: text in log_text(d))

    browser.switch_to.window(second)
    wait(browser, "the other tab shows the line", lambda d: text in log_text(d))
    line = browser.find_element(By.XPATH, f"//ol[@id='log']/li[contains(., '{text}')]")
    assert line.find_element(By.TAG_NAME, "strong").text == "alice"
    n = browser.find_element(By.ID, "n")
    n.clear()
    n.send_keys("100000")
    browser.find_element(By.ID, "task-button").click()

    browser.switch_to.window(first)
    wait(browser, "the first tab sees the task's result", lambda d: "= 9,592, in" in log_text(d))

    folder = artifacts_dir()
    shots = []

    def screenshot(name: str) -> None:
        path = folder / name
        assert browser.save_screenshot(str(path)), path
        shots.append(str(path))

    screenshot("chat-tab1.png")
    browser.switch_to.window(second)
    screenshot("chat-tab2.png")

    # The live counter: a clap in one tab reaches the other's waiting long-poll.
    for handle in (first, second):
        browser.switch_to.window(handle)
        browser.get(f"{site.url}/")
        wait(browser, "the counter's long-poll waits",
             lambda d: d.find_element(By.ID, "poll-state").text == "waiting for a change")
    # Both tabs left the room: their sockets are closed (the pages close them on pagehide;
    # Chromium's back/forward cache would keep them open), so the room's group empties.
    wait(browser, "the room's group empties once both tabs left it",
         lambda d: group_size(site, "room-browser") == 0)
    claps = int(browser.find_element(By.ID, "claps").text)
    browser.find_element(By.ID, "clap").click()
    browser.switch_to.window(first)
    wait(browser, "the other tab's counter moves", lambda d: d.find_element(By.ID, "claps").text == str(claps + 1))
    screenshot("home.png")

    browser.get(f"{site.url}/stats/")
    wait(browser, "the statistics refresh", lambda d: d.find_element(By.ID, "updated").text.startswith("updated"))
    assert "room-browser 0" in browser.find_element(By.ID, "groups").text
    screenshot("stats.png")
    report_line(f"screenshots: {', '.join(shots)}")
    print(f"screenshots saved: {shots}")
