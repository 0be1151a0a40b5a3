"""The console as the tests use it: sign in with a key, go to a page, wait for what it shows, take screenshots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, ImageStat
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

T = TypeVar("T")
WAIT_S = 90.0  # a job of the tests ends well within this
# A page of the console is text on a background: its pixels vary. A blank (or all-one-colour) capture does not.
MIN_PIXEL_VARIANCE = 50.0


class Console:
    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = f"{url}/ui/"

    def sign_in(self, key: str, page: str = "#/jobs") -> None:
        self.open(page)
        self.find("#api-key").send_keys(key)
        self.find("#sign-in button[type=submit]").click()
        self.wait(lambda: self.find("#nav").is_displayed(), "the console did not let the key in")

    def sign_out(self) -> None:
        self.driver.get(self.url)
        self.driver.execute_script("sessionStorage.clear()")

    def open(self, page: str) -> None:
        self.driver.get(self.url + page)

    def go(self, page: str) -> None:
        """Another page of the console, as its links go: the address's #fragment changes, nothing is reloaded."""
        self.driver.execute_script("location.hash = arguments[0]", page)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition: Callable[[], T], message: str, timeout_s: float = WAIT_S) -> T:
        """`condition()` once it is true; a condition that raises (an element not there yet) is asked again."""
        wait = WebDriverWait(self.driver, timeout_s, poll_frequency=0.2, ignored_exceptions=[WebDriverException])
        try:
            return wait.until(lambda _: condition(), message)
        except TimeoutException:
            shown = self.driver.execute_script("return document.body.innerText")
            raise AssertionError(
                f"{message}\n--- the page shows:\n{shown}\n--- errors: {self.browser_errors()}"
            ) from None

    def text(self, css: str) -> str:
        found = self.find_all(css)
        return found[0].text if found else ""

    def job_row(self, job_id: str) -> dict[str, Any] | None:
        """The list's row of a job, read at once (the list is redrawn as it changes): status and progress."""
        row: dict[str, Any] | None = self.driver.execute_script(
            """const row = document.querySelector(`#jobs tr[data-job-id="${arguments[0]}"]`);
            const bar = row && row.querySelector('progress');
            return row &&
                {status: row.dataset.status, done: bar.getAttribute('value'), total: bar.getAttribute('max')};""",
            job_id,
        )
        return row

    def open_job(self, job_id: str) -> None:
        """Follow the job's link in the list."""
        self.wait(lambda: self.job_row(job_id), f"job {job_id} did not appear in the list")
        self.wait(lambda: self.find(f'#jobs tr[data-job-id="{job_id}"] a').click() or True, "no link to the job")
        self.wait(lambda: self.find("#job-title").text == f"Job {job_id}", f"the page of job {job_id} did not open")

    def mark_page(self) -> None:
        """Mark the loaded document: the mark is gone if the page is ever reloaded."""
        self.driver.execute_script("window.loadedOnce = true")

    def reloaded(self) -> bool:
        return not self.driver.execute_script("return window.loadedOnce === true")

    def screenshot(self, path: Path) -> float:
        """Save a screenshot to `path` and answer the variance of its pixels' brightness."""
        path.parent.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(path)), f"no screenshot saved to {path}"
        with Image.open(path) as image:
            return float(ImageStat.Stat(image.convert("L")).var[0])

    def browser_errors(self) -> list[dict[str, Any]]:
        """The browser console's errors since the last call (a script error, a Content Security Policy refusal)."""
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]
