"""The console in a real browser against the real stack: jobs appear and follow their progress live, dead letters
show with their errors and retry, stop works, each key sees what its scope allows, a wrong key is refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.alert import Alert
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from tests.browser.console import MIN_PIXEL_VARIANCE, Console
from tests.e2e.conftest import Stack
from thresher.core import auth
from thresher.tools.client import GatewayClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def submit(client: GatewayClient, out: Path, items: int, **config: Any) -> str:
    job = {"workers": 1, "item_list": {"items": list(range(1, items + 1)), "batch_size": 1}}
    return client.submit("recorder", job | {"config": {"out_dir": str(out), **config}})["job_id"]


def test_a_job_submitted_through_the_api_appears_and_reaches_succeeded_without_a_reload(
    stack: Stack, console: Console, tmp_path: Path
) -> None:
    assert stack.api_key
    console.sign_in(stack.api_key)
    console.mark_page()

    job_id = submit(stack.client, tmp_path, items=12, slow_s=0.4)

    # It appears in the list; its page follows it live to the end, its chart and logs with it
    console.open_job(job_id)
    console.wait(lambda: console.find("#job-status").get_attribute("data-status") == "succeeded", "no success shown")
    assert console.text("#pace").startswith("12 of 12 batches")
    assert len(console.find("#throughput polyline").get_attribute("points").split()) >= 2  # changes seen live
    console.wait(lambda: "recording_worker" in console.text("#logs") or "dequeuer" in console.text("#logs"), "no logs")
    assert console.find("#stop").is_displayed() is False
    # And back in the list, its row says so too, the page never reloaded
    console.go("#/jobs")
    row = console.wait(lambda: console.job_row(job_id), "the job is not in the list")
    assert row == {"status": "succeeded", "done": "12", "total": "12"}
    # Filtered by status, then by API
    Select(console.find("#filter-status")).select_by_visible_text("in progress")
    console.wait(lambda: console.job_row(job_id) is None, "a job that ended is listed as in progress")
    Select(console.find("#filter-status")).select_by_visible_text("Succeeded")
    console.wait(lambda: console.job_row(job_id), "the job is not listed among those that succeeded")
    console.find("#filter-api").send_keys("another-api", Keys.ENTER)
    console.wait(lambda: console.text("#jobs") == "No jobs match.", "the jobs of another API are listed")
    assert console.browser_errors() == []
    assert not console.reloaded()


def test_a_poison_jobs_dead_letter_is_shown_with_its_error_and_the_retry_button_makes_a_new_job(
    stack: Stack, console: Console, tmp_path: Path
) -> None:
    assert stack.api_key
    job_id = submit(stack.client, tmp_path, items=3, fail_items=[2], fail_message="poison item")
    console.sign_in(stack.api_key, f"#/jobs/{job_id}")

    # The dead letter shows with its items and last error once the job has ended
    status = console.wait(lambda: console.find("#job-status").get_attribute("data-status"), "no status shown")
    console.wait(lambda: console.find("#job-status").get_attribute("data-status") == "completed_with_failures", status)
    # The cells' texts read in one go inside the wait: the table may be drawn again between two reads
    texts = console.wait(lambda: [cell.text for cell in console.find_all("#dead-letters td")], "no dead letter shown")
    [dead] = stack.client.failed(job_id)
    assert texts[:3] == [dead["batch_id"], "[2]", str(dead["attempts"])]
    assert "poison item in [2]" in texts[3]
    assert "Completed with failures" in console.text("#job-status")

    console.find("#retry").click()

    def new_job_shown() -> str:
        shown = console.find("#job-title").text.removeprefix("Job ")
        return shown if shown != job_id else ""

    retry_id = console.wait(new_job_shown, "the retry opened no new job")
    assert stack.client.job(retry_id)["job_status"]["retry_of"] == job_id
    console.wait(lambda: job_id in console.text("#details"), "the new job does not say which job it retries")


def test_a_bisecting_jobs_progress_counts_the_halves_and_its_items_are_shown(
    stack: Stack, console: Console, tmp_path: Path
) -> None:
    assert stack.api_key
    # One batch of 4 items whose item 2 is poison: split into [1, 2] and [3, 4], then [1, 2] into [1] and [2]
    job = {
        "workers": 1,
        "item_list": {"items": [1, 2, 3, 4], "batch_size": 4},
        "on_failure": "bisect",
        "sqs_dead_letter_queue": {"max_receive_count": 1},
        "config": {"out_dir": str(tmp_path), "fail_items": [2]},
    }
    job_id = stack.client.submit("recorder", job)["job_id"]
    console.sign_in(stack.api_key, f"#/jobs/{job_id}")

    console.wait(lambda: console.find("#job-status").get_attribute("data-status") == "completed_with_failures", "")
    assert console.text("#pace").startswith("3 of 3 batches"), "1 batch, and 1 more for each of its 2 splits"
    batches = console.wait(lambda: console.text("[aria-label=Batches]"), "no batch facts shown")
    assert "Split\n2" in batches and "Items succeeded\n3" in batches and "Items dead-lettered\n1" in batches


def test_the_stop_button_stops_a_running_job(stack: Stack, console: Console, tmp_path: Path) -> None:
    assert stack.api_key
    job_id = submit(stack.client, tmp_path, items=50, slow_s=1)
    console.sign_in(stack.api_key, f"#/jobs/{job_id}")
    console.wait(lambda: console.find("#stop").is_displayed(), "no stop button for a job in progress")

    console.find("#stop").click()
    Alert(console.driver).accept()  # "Stop job ...?"

    console.wait(lambda: console.find("#job-status").get_attribute("data-status") == "stopped", "no stop shown")
    assert stack.client.job(job_id)["job_status"]["status"] == "stopped"
    assert not console.find("#stop").is_displayed()


def test_a_submit_key_sees_only_its_own_jobs_and_each_key_is_offered_only_what_its_scope_allows(
    stack: Stack, console: Console, tmp_path: Path
) -> None:
    keys = {name: auth.generate_key() for name in ("alice", "reader")}
    auth.add_key(stack.data_dir / auth.KEYS_FILE, "alice", ["submit"], keys["alice"])
    auth.add_key(stack.data_dir / auth.KEYS_FILE, "reader", ["read"], keys["reader"])
    theirs = submit(stack.client, tmp_path / "admin", items=1)
    hers = submit(GatewayClient(stack.url, api_key=keys["alice"]), tmp_path / "alice", items=40, slow_s=1)

    # Alice lists her job only, may stop it, may submit, and is not offered the APIs (her key cannot read them)
    console.sign_in(keys["alice"])
    console.wait(lambda: console.job_row(hers), "her job is not listed")
    assert console.job_row(theirs) is None
    assert [link.text for link in console.find_all("#nav a") if link.is_displayed()] == ["Jobs", "Submit a job"]
    assert "alice (submit)" in console.text("#who")
    console.open_job(hers)
    console.wait(lambda: console.find("#stop").is_displayed(), "no stop button for her own job")
    console.go(f"#/jobs/{theirs}")
    console.wait(lambda: "submitted with another API key" in console.text("main .problem"), "another's job was shown")
    console.sign_out()

    # The reader lists both, may read the APIs, and is offered neither submitting nor stopping
    console.sign_in(keys["reader"])
    console.wait(lambda: console.job_row(hers) and console.job_row(theirs), "a reader does not list every job")
    assert [link.text for link in console.find_all("#nav a") if link.is_displayed()] == ["Jobs", "APIs"]
    console.open_job(hers)
    console.wait(lambda: console.find("#job-status").get_attribute("data-status"), "no status shown")
    assert not console.find("#stop").is_displayed()
    stack.client.stop(hers)

    # A key revoked meanwhile (its line deleted) sends the console back to the key form, saying why
    console.go("#/jobs")
    keys_file = stack.data_dir / auth.KEYS_FILE
    keys_file.write_text("".join(line for line in keys_file.read_text().splitlines(True) if "reader" not in line))
    console.wait(lambda: console.find("#api-key").is_displayed(), "the console goes on with a revoked key")
    assert console.text("#sign-in-problem") == "This key was refused: the API key is not valid"


def test_a_wrong_key_is_refused_and_kept_nowhere(stack: Stack, console: Console) -> None:
    wrong = auth.generate_key()
    console.open("#/jobs")
    console.find("#api-key").send_keys(wrong)
    console.find("#sign-in button[type=submit]").click()

    problem = console.wait(lambda: console.text("#sign-in-problem"), "the refusal is not shown")
    assert problem == "This key was refused: the API key is not valid"
    assert not console.find("#nav").is_displayed() and console.find("#api-key").is_displayed()
    assert console.driver.execute_script("return sessionStorage.length") == 0
    assert wrong not in console.driver.current_url and not console.driver.get_cookies()


def test_each_page_is_drawn_labelled_and_usable_from_the_keyboard_at_desktop_and_phone_widths(
    stack: Stack, console: Console, tmp_path: Path
) -> None:
    assert stack.api_key
    screens = tmp_path / "screens"
    console.open("#/apis")
    drawn = {"sign-in": console.screenshot(screens / "sign-in.png")}
    console.find("#api-key").send_keys(stack.api_key, Keys.ENTER)  # signing in from the keyboard
    console.wait(lambda: console.find_all("section.card"), "the APIs page did not open")
    assert "recorder" in console.text("main") and "recording_worker.py" in console.text("main")
    drawn["apis"] = console.screenshot(screens / "apis.png")

    # Submitting from the editor: Submit is offered once the dry run passed
    console.go("#/submit/recorder")
    editor = console.wait(lambda: console.find("#submission"), "no job editor")
    assert not console.find("#submit").is_enabled()
    editor.clear()
    editor.send_keys(json.dumps({"workers": 0, "item_list": {"items": [1], "batch_size": 1}}))
    console.find("#dry-run").click()  # a failed check is Cortex's plain text: the console shows it all the same
    console.wait(lambda: "workers: must be greater than or equal to 1 (got 0)" in console.text("#outcome"), "no reason")
    assert not console.find("#submit").is_enabled()
    refused = console.browser_errors()  # read, and so cleared: the dry run's 400, and nothing else
    assert [(e["source"], "dryRun=true" in e["message"]) for e in refused] == [("network", True)], refused
    editor.clear()
    editor.send_keys(json.dumps({"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1},
                                 "config": {"out_dir": str(tmp_path / "out")}}))  # fmt: skip
    console.find("#dry-run").click()
    console.wait(lambda: console.text("#outcome") == "validations passed", "the dry run did not pass")
    drawn["submit"] = console.screenshot(screens / "submit.png")
    console.find("#submit").click()
    job_id = console.wait(lambda: console.find("#job-title").text.removeprefix("Job "), "the job's page did not open")
    console.wait(lambda: console.find("#job-status").get_attribute("data-status") == "succeeded", "no success")
    drawn["job"] = console.screenshot(screens / "job.png")

    # The list, and a job opened from it by keyboard alone
    console.go("#/jobs")
    console.wait(lambda: console.job_row(job_id), "the submitted job is not listed")
    drawn["jobs"] = console.screenshot(screens / "jobs.png")
    unlabelled = console.driver.execute_script(
        """return [...document.querySelectorAll('input, select, textarea, progress, button')]
             .filter((e) => !e.labels?.length && !e.getAttribute('aria-label') && !e.textContent.trim())
             .map((e) => e.outerHTML);"""
    )
    assert unlabelled == []
    console.find(f'#jobs tr[data-job-id="{job_id}"] a').send_keys(Keys.ENTER)
    console.wait(lambda: console.find("#job-title").text == f"Job {job_id}", "Enter on a job's link did not open it")

    # On a phone the pages fit the screen's width
    console.driver.set_window_size(390, 844)
    for page in ("#/jobs", f"#/jobs/{job_id}", "#/submit"):
        console.go(page)
        console.wait(lambda: console.find_all("main h1"), f"{page} did not open")
        assert console.driver.execute_script("return document.documentElement.scrollWidth <= innerWidth"), page
        drawn[f"phone {page}"] = console.screenshot(screens / f"phone-{len(drawn)}.png")

    assert {page: variance for page, variance in drawn.items() if variance < MIN_PIXEL_VARIANCE} == {}
    assert console.browser_errors() == []  # no script error and nothing the Content Security Policy refused


def test_the_console_is_served_under_a_strict_policy_and_only_its_own_files_are(stack: Stack) -> None:
    status, headers, body = http_get(f"{stack.url}/ui/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "form-action 'none'" in policy and "unsafe" not in policy
    assert b'<script type="module" src="app.js">' in body
    assert http_get(f"{stack.url}/ui/app.js")[1]["Content-Type"] == "text/javascript; charset=utf-8"
    for path in ("/ui/missing.js", "/ui/..%2fui.py", "/ui/%2e%2e%2fui.py", "/ui/console/app.js"):
        status, _, body = http_get(f"{stack.url}{path}")
        assert (status, json.loads(body)["kind"]) == (404, "not_found"), path


def test_get_v1_key_names_the_requests_key_and_its_scopes_and_refuses_a_wrong_one(stack: Stack) -> None:
    assert stack.api_key
    status, _, body = http_get(f"{stack.url}/v1/key", stack.api_key)
    assert (status, json.loads(body)) == (200, {"name": "local", "scopes": ["admin"]})
    status, _, body = http_get(f"{stack.url}/v1/key", auth.generate_key())
    assert (status, json.loads(body)["kind"]) == (401, "unauthenticated")


def http_get(url: str, key: str | None = None) -> tuple[int, Message, bytes]:
    headers = {"Authorization": auth.authorization(key)} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()
