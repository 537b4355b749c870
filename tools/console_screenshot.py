#!/usr/bin/env python3
"""A screenshot of the web console (``ndsclust web``) in Debian's headless Chromium.

With ``--lab DIR`` it shows the console of the lab running there (``ndsclust lab up``,
whose ``lab.json`` names it); without, it starts a lab of its own (three servers, two
sample applications, the console), fails ``app1`` over by killing its server so the page
has a failover to show, and removes everything afterwards. It waits until the page lists
every application, saves the PNG and prints ``screenshot: <path> <bytes>``.

    tools/console_screenshot.py [--out console.png] [--lab /var/tmp/ndsclust-lab]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndsclust.lab.cluster import LabCluster
from ndsclust.model import ServerName
from ndsclust.web.browser import headless_chromium
from ndsclust.web.lab import start_console


def shoot(url: str, out: Path, tags: list[str], host: tuple[str, str] | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(tag: str) -> str:
        cells = driver.find_elements(By.CSS_SELECTOR, f'#apps tr[data-tag="{tag}"] td.host')
        return str(cells[0].text) if cells else ""

    with headless_chromium() as driver:
        driver.get(url)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: all(shown(t) for t in tags))
        if host is not None:
            wait.until(lambda d: shown(host[0]) == host[1])
        driver.save_screenshot(str(out))
    print(f"screenshot: {out} {out.stat().st_size}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("console.png"))
    p.add_argument("--lab", type=Path, help="the directory of a running lab (ndsclust lab up)")
    a = p.parse_args(argv)
    if a.lab is not None:
        state = json.loads((a.lab / "lab.json").read_text())
        shoot(state["console"]["url"], a.out.resolve(), [])
        return 0
    with LabCluster(3, base_dir=tempfile.mkdtemp(prefix="ndsclust-shot-"), http=True) as lab:
        lab.add_app("app1", "alpha", ["beta", "gamma"], auto_recover=False)
        lab.add_app("app2", "beta", ["gamma", "alpha"])
        lab.wait_running("app1", "alpha")
        console = start_console(lab)
        try:
            lab.kill_server(ServerName("alpha"))
            lab.wait_running("app1", "beta", timeout=30)
            shoot(console.url, a.out.resolve(), ["app1", "app2"], ("app1", "beta"))
        finally:
            console.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
