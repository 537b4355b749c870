"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven
by selenium): it lists the lab's applications, shows a failover without a reload, refuses
an action without an operator's sign-in or without the CSRF token, and writes one with
them to the directory."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ndsclust.lab.cluster import LabCluster
from ndsclust.lab.directory import wait_until
from ndsclust.model import ServerName
from ndsclust.web.browser import CHROMEDRIVER, CHROMIUM, headless_chromium
from ndsclust.web.lab import start_console

LabFactory = Callable[..., LabCluster]
A, B, C = ServerName("alpha"), ServerName("beta"), ServerName("gamma")


# No skip: `make test` runs tools/bootstrap.sh, which installs Debian's chromium and
# chromium-driver; without them this test fails and says so (a missing browser is a broken
# bootstrap, not a reason to pass).
@pytest.fixture(autouse=True)
def _browser_installed() -> None:
    missing = [b for b in (CHROMIUM, CHROMEDRIVER) if not shutil.which(b)]
    assert not missing, f"{', '.join(missing)} not found: run tools/bootstrap.sh"


FETCH_WITHOUT_TOKEN = """
const done = arguments[arguments.length - 1];
fetch("/api/action", {method: "POST", credentials: "same-origin",
  headers: {"Content-Type": "application/json"},
  body: JSON.stringify({verb: "migrate", tag: "app1", server: "gamma"})})
  .then((r) => done(r.status), (e) => done(String(e)));
"""


def test_console_shows_a_failover_live_and_acts_only_for_a_signed_in_operator(
    lab: LabFactory, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    c = lab(3)
    c.add_app("app1", A, [B, C], auto_recover=False)
    c.wait_running("app1", A)
    console = start_console(c)
    try:
        with headless_chromium() as driver:
            driver.set_script_timeout(30)
            wait = WebDriverWait(driver, 60, poll_frequency=0.1)

            def cell(what: str) -> str:
                found = driver.find_elements(By.CSS_SELECTOR, f'#apps tr[data-tag="app1"] {what}')
                return str(found[0].text) if found else ""

            driver.get(console.url)
            headers = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#apps th")]
            assert "host" in headers
            wait.until(lambda d: cell("td.host") == "alpha")
            assert {
                tr.get_attribute("data-server")
                for tr in driver.find_elements(By.CSS_SELECTOR, "#servers tbody tr")
            } == {"alpha", "beta", "gamma"}
            driver.execute_script("window.notReloaded = true")

            def channels(server: str) -> str:
                found = driver.find_elements(
                    By.CSS_SELECTOR, f'#servers tr[data-server="{server}"] td.channels'
                )
                return str(found[0].text) if found else ""

            # Each server's channels are what its peers' sentinels report hearing it on.
            wait.until(
                lambda d: channels("beta").startswith("heard on ") and "alpha: " in channels("beta")
            )
            assert "lan" in channels("beta"), channels("beta")

            # A failover shows without a reload.
            c.kill_server(A)
            wait.until(lambda d: cell("td.host") == "beta")
            assert driver.execute_script("return window.notReloaded") is True
            wait.until(lambda d: channels("alpha").startswith("heard on no channel"))
            wait.until(lambda d: cell("td.state").startswith("running"))
            driver.save_screenshot(str(tmp_path / "console.png"))
            assert (tmp_path / "console.png").stat().st_size > 10_000

            def migrate_to(server: str) -> None:
                row = '#apps tr[data-tag="app1"]'
                Select(driver.find_element(By.CSS_SELECTOR, f"{row} select.verb")).select_by_value(
                    "migrate"
                )
                Select(driver.find_element(By.CSS_SELECTOR, f"{row} select.to")).select_by_value(
                    server
                )
                driver.find_element(By.CSS_SELECTOR, f"{row} button.go").click()

            # Without an operator's identity: refused, nothing written.
            migrate_to("gamma")
            wait.until(lambda d: "refused (401)" in d.find_element(By.ID, "msg").text)
            assert c.app("app1").request is None and c.app("app1").host == B

            # Signed in, but without the CSRF token: refused.
            driver.find_element(By.ID, "bind_dn").send_keys(c.directory.admin_dn)
            driver.find_element(By.ID, "password").send_keys(c.directory.admin_password)
            driver.find_element(By.ID, "login-button").click()
            wait.until(lambda d: d.find_element(By.ID, "who-name").text == c.directory.admin_dn)
            assert driver.execute_async_script(FETCH_WITHOUT_TOKEN) == 403
            assert c.app("app1").request is None

            # Signed in, from the page: written to the directory and carried out.
            migrate_to("gamma")
            wait.until(lambda d: d.find_element(By.ID, "msg").text.startswith("done:"))
            wait_until(
                lambda: any(
                    e.kind == "request_migrate" and "via=web" in e.text
                    for e in c.store().events(tag="app1")
                ),
                timeout=20,
                what="the console's migrate in the audit trail",
            )
            c.wait_running("app1", C, timeout=30)
            wait.until(lambda d: cell("td.host") == "gamma")
            events = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#events li")]
            assert any("request_migrate" in t and "via=web" in t for t in events), events
            assert driver.execute_script("return window.notReloaded") is True
    finally:
        console.stop()
