"""The console in a real browser: Debian's chromium through its chromedriver, driven by Selenium, against the
embedded stack as processes (the recording worker of tests/e2e, its admin key, and keys of other scopes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from tests.browser.console import Console
from tests.e2e.conftest import WORKERS_DIR, Stack, stopped_after

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, and nothing that reaches outside this machine (see shared/design/TOOLING.md).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WINDOW = (1280, 900)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("console") / "data", WORKERS_DIR / "apis.yaml")
    with stopped_after(stack):
        yield stack


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"the browser tests need Debian's chromium and chromium-driver ({', '.join(missing)} not found):"
            " run `make tools` as root"
        )
    profile = tmp_path_factory.mktemp("chromium")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as env:
        # Selenium Manager would fetch a driver and a browser of its own: pointed at no file, any call to it fails.
        env.setenv("SE_MANAGER_PATH", str(profile / "selenium-manager-must-not-run"))
        browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def console(driver: webdriver.Chrome, stack: Stack) -> Iterator[Console]:
    """The console, signed out, at the desktop width."""
    driver.set_window_size(*WINDOW)
    console = Console(driver, stack.url)
    console.browser_errors()  # read, and so cleared: a test sees only the errors of its own pages
    yield console
    console.sign_out()
