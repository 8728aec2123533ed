"""The console in a real headless Chromium (Debian's chromium and chromedriver, through Selenium): what an
operator does on the day. Skipped, saying so, when the browser is missing (`.ci/run` installs it)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, event
from tests.zoom_standin import Reply

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -r requirements-dev.txt")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

PASSWORD = "browser-test-password-81c2"
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
RULES = """
rules:
  - name: Stream town halls
    on: meeting.started
    when:
      topic: {glob: "Town Hall*"}
    do:
      - livestream.start:
          display_name: "Live: {{ topic }}"
  - name: Board meetings
    on: meeting.started
    when:
      host_email: board@example.com
    do: [livestream.start]
"""


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("browser tests skipped: no /usr/bin/chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 20.0):
    """Until condition(driver) holds. A page that refreshes itself (a pending action) can replace an element
    between finding it and reading it: that look is retried, as one that found nothing is."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(lambda d: condition(d))


def text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def log_in(driver, server) -> None:
    driver.get(server.url + "/console")
    assert "/console/login" in driver.current_url
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: d.find_elements(By.ID, "logout"))


def test_an_operator_finds_a_delivery_reads_why_retries_it_and_logs_out(make_server, zoom, browser):
    server = make_server(RULES, env={"REACTOR_CONSOLE_PASSWORD": PASSWORD}, zoom=zoom)
    zoom.script("/v2/meetings/86000000001/livestream/status",  # then a slow success: the page shows it running first
                [Reply(400, {"code": 3000, "message": "Cannot start the live stream: the stream URL is not set"}),
                 Reply(204, delay=1.5)])
    server.post(event(meeting_id="86000000001", topic="Town Hall - December"))
    server.post(event(meeting_id="86000000002", topic="Weekly sync"))
    server.wait_jobs(1)

    log_in(browser, server)
    browser.find_element(By.ID, "header-q").send_keys("86000000001\n")  # the search box on every page
    wait(browser, lambda d: "searching by meeting or webinar id" in text(d))
    rows = browser.find_elements(By.CSS_SELECTOR, "#deliveries tr td:first-child a")
    assert len(rows) == 1
    rows[0].click()
    wait(browser, lambda d: d.find_elements(By.ID, "verdicts"))
    verdicts = browser.find_element(By.ID, "verdicts").text
    assert "Board meetings" not in verdicts or "no match" in verdicts  # the index may not offer it as a candidate
    assert "Stream town halls" in verdicts and "matched" in verdicts
    attempts = browser.find_element(By.CSS_SELECTOR, ".attempts").text
    assert "400" in attempts and "3000" in attempts and "the stream URL is not set" in attempts
    [job] = [j["id"] for j in server.jobs()]
    assert browser.find_element(By.ID, f"status-{job}").text == "dead"

    # why did the weekly sync not stream? its delivery says which condition failed, and where
    browser.get(server.url + "/console/deliveries?q=Weekly")
    browser.find_element(By.CSS_SELECTOR, "#deliveries tr td:first-child a").click()
    wait(browser, lambda d: d.find_elements(By.ID, "explained"))
    why = browser.find_element(By.ID, "explained").text
    assert "no match" in why and "Town Hall*" in why and "Weekly sync" in why and "rules.yaml:3" in why

    browser.back()
    browser.back()
    wait(browser, lambda d: d.find_elements(By.ID, f"retry-{job}"))
    browser.find_element(By.ID, f"retry-{job}").click()
    wait(browser, lambda d: d.find_element(By.ID, f"status-{job}").text in ("pending", "running"))
    wait(browser, lambda d: d.find_element(By.ID, f"status-{job}").text == "done")  # the page refreshes itself
    assert f"action {job} re-queued" in text(browser) or "requeued" in text(browser)
    assert "retried from the console" in text(browser)
    browser.save_screenshot(str(ROOT / "docs" / "console.png"))  # the README shows this page
    assert len(zoom.succeeded()) == 1
    browser.get(server.url + "/console/meetings/86000000001")
    assert "started by reactor" in browser.find_element(By.ID, "stream-state").text

    browser.find_element(By.ID, "logout").click()
    wait(browser, lambda d: "/console/login" in d.current_url)
    browser.get(server.url + "/console/deliveries")
    assert "/console/login" in browser.current_url


def test_read_only_shows_no_retry_and_refuses_the_post(make_server, zoom, browser):
    server = make_server(RULES, env={"REACTOR_CONSOLE_PASSWORD": PASSWORD, "REACTOR_CONSOLE_READONLY": "1"}, zoom=zoom)
    zoom.script("/v2/meetings/86000000003/livestream/status", [Reply(404, {"code": 1001, "message": "Meeting not found"})])
    delivery = server.post(event(meeting_id="86000000003", topic="Town Hall - read only")).json()["delivery"]
    [job] = [j["id"] for j in server.wait_jobs(1)]
    log_in(browser, server)
    browser.get(f"{server.url}/console/deliveries/{delivery}")
    assert "Meeting not found" in text(browser) and "read-only" in text(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "button.retry")
    # a hand-made form posting the retry, with the page's own token, is refused
    browser.execute_script("""
        const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        for (const [k, v] of [['csrf', arguments[1]], ['delivery', arguments[2]]]) {
            const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }
        document.body.appendChild(f); f.submit();""",
        f"/console/jobs/{job}/retry", browser.find_element(By.NAME, "csrf").get_attribute("value"), str(delivery))
    wait(browser, lambda d: d.find_elements(By.ID, "message"))
    assert "read-only" in browser.find_element(By.ID, "message").text
    time.sleep(0.5)
    assert [j["status"] for j in server.jobs()] == ["dead"] and len(zoom.api_calls()) == 1
