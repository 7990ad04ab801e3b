"""Full-page screenshots of built pages, for the browser test and for before/after comparisons.

    python tests/browser/screenshots.py HTML_DIR OUT_DIR chapters/04_backpropagation chapters/05_...

serves ``HTML_DIR`` on localhost, opens each page in headless Chromium and saves ``OUT_DIR/<page>__full.png``
(``/`` in the page name written as ``__``), the whole page at 1280 pixels wide.
"""

from __future__ import annotations

import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WIDTH, MAX_HEIGHT = 1280, 30_000


def full_page(browser, path: Path) -> Path:
    """Save the whole page now open in ``browser`` (resized to its height, then back) as ``path``."""
    size = browser.get_window_size()
    height = browser.execute_script("return Math.max(document.body.scrollHeight, "
                                    "document.documentElement.scrollHeight);")
    browser.set_window_size(WIDTH, min(int(height) + 100, MAX_HEIGHT))
    browser.save_screenshot(str(path))
    browser.set_window_size(size["width"], size["height"])
    return path


def main(html: str, out: str, *pages: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=html))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--window-size={WIDTH},1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    Path(out).mkdir(parents=True, exist_ok=True)
    try:
        for page in pages:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/{page}.html")
            print(full_page(driver, Path(out) / f"{page.replace('/', '__')}__full.png"))
    finally:
        driver.quit()
        server.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
