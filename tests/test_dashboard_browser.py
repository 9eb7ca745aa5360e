"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a real
``prosaas serve`` and ``prosaas worker`` on PostgreSQL and Redis.

A failing step saves a screenshot (the path is in the failure message). With
``PROSAAS_SCREENSHOTS_DIR`` set (``make screenshots``) the pages are also saved there for
docs/dashboard.md.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from prosaas_core.jobs.enqueue import enqueue
from prosaas_core.testing import PROSAAS, ServeProcess, business_with_token
from prosaas_core.tokens import create_admin_token

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)",
    ),
]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
#: the browser's time zone: pages must show times in it, not in UTC
TIME_ZONE = "America/New_York"


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def stack(env, runtime, start_worker, tmp_path):
    """A real server and worker; short retry backoff so a failing job fails quickly."""
    env = {**env, "PROSAAS_RETRY_BACKOFF": "0.2", "PROSAAS_RETRY_BACKOFF_MAX": "0.5"}
    worker = start_worker(extra_env=env)
    worker.wait_for_log("Heartbeat monitoring started", timeout=60)
    # with the access log on, so the test can check that no token reaches a log
    serve = [PROSAAS, "serve", "--port", "{port}", "--workers", "1", "--access-log"]
    with ServeProcess(env, args=serve, log_path=tmp_path / "serve.log") as server:
        yield server, worker


class Shots:
    """Screenshots: on failure (always) and of each page for the docs (when asked)."""

    def __init__(self, page, tmp_path: Path) -> None:
        self.page = page
        self.failures = Path(os.environ.get("PROSAAS_BROWSER_ARTIFACTS") or tmp_path)
        docs = os.environ.get("PROSAAS_SCREENSHOTS_DIR")
        self.docs = Path(docs) if docs else None

    def doc(self, name: str, *, full_page: bool = False) -> None:
        if self.docs is not None:
            self.docs.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(self.docs / f"dashboard-{name}.png"), full_page=full_page)

    def failed(self, name: str) -> Path:
        self.failures.mkdir(parents=True, exist_ok=True)
        path = self.failures / f"failure-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def status_of(runtime, job_id: int) -> str:
    with runtime.engine.connect() as conn:
        return conn.execute(
            text("SELECT status FROM background_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()


def wait_status(runtime, job_id: int, wanted: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while status_of(runtime, job_id) != wanted:
        assert time.monotonic() < end, f"job {job_id} never became {wanted}"
        time.sleep(0.1)


def poll_until(fn, what: str, timeout: float = 30.0):
    """In Python, not page.wait_for_function: the dashboard's CSP forbids eval."""
    end = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_operator_watches_and_steers_jobs(browser, stack, runtime, tmp_path):
    from playwright.sync_api import expect

    server, worker = stack
    with runtime.session() as s:
        admin = create_admin_token(s, "browser test")[0]
    bid, _ = business_with_token(runtime, "Acme Calls")
    for i in range(3):
        enqueue(runtime, "acme_echo", bid, {"message": f"hello {i}"})
    # fails its 3 attempts, so it is `failed`; a retry (attempt 4) succeeds
    failing = enqueue(runtime, "acme_fail", bid, {"fail_times": 3}).id
    context = browser.new_context(viewport=DESKTOP, timezone_id=TIME_ZONE)
    page = context.new_page()
    shots = Shots(page, tmp_path)
    step = "sign-in"
    try:
        page.goto(server.url + "/dashboard/jobs")
        expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
        shots.doc("login")
        page.get_by_label("Token").fill(admin)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/dashboard/jobs$"))
        expect(page.get_by_test_id("viewer")).to_have_text("operator")
        assert admin not in page.url

        step = "keyboard"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")  # the first nav link: Overview
        expect(page).to_have_url(re.compile(r"/dashboard/$"))

        step = "progress"
        wait_status(runtime, failing, "failed")
        job = enqueue(runtime, "acme_count", bid, {"n": 1000, "batch": 10, "sleep": 0.25}).id
        page.goto(f"{server.url}/dashboard/jobs/{job}")
        page.evaluate("window.__noReload = true")
        status = page.locator('[data-field="status"]')
        expect(status).to_have_text("running", timeout=30_000)
        bar = page.locator('progress[data-field="progress"]')
        first = poll_until(lambda: bar.evaluate("p => p.value"), "the bar to start")
        poll_until(lambda: bar.evaluate("p => p.value") > first, "the bar to advance")
        assert page.evaluate("window.__noReload") is True, "the page reloaded"
        expect(page.locator('[data-field="rate"]')).to_have_text(re.compile(r"/s$"))
        shots.doc("job")

        step = "cancel"
        page.get_by_role("button", name="Cancel job").click()
        expect(page.get_by_role("status")).to_have_text("Cancel requested.")
        expect(status).to_have_text("cancelled", timeout=30_000)
        assert status_of(runtime, job) == "cancelled"

        step = "retry"
        page.goto(f"{server.url}/dashboard/jobs/{failing}")
        expect(status).to_have_text("failed")
        expect(page.locator("pre.error")).to_contain_text("acme_fail failing on purpose")
        page.get_by_role("button", name="Retry job").click()
        expect(page.get_by_role("status")).to_have_text("Queued again.")
        expect(status).to_have_text("succeeded", timeout=30_000)
        expect(page.locator('[data-field="attempts"]')).to_have_text(re.compile(r"^4/"))

        step = "filter"
        page.goto(server.url + "/dashboard/jobs")
        page.get_by_label("Status").select_option("succeeded")
        page.get_by_role("button", name="Apply").click()
        expect(page).to_have_url(re.compile(r"status=succeeded"))
        statuses = page.locator("tbody [data-field='status']").all_inner_texts()
        assert len(statuses) == 4 and set(statuses) == {"succeeded"}
        page.goto(server.url + "/dashboard/jobs")
        # times are in the viewer's zone, not UTC
        first_time = page.locator("tbody time").first
        assert "UTC" not in first_time.inner_text()
        expect(page.locator("#tz")).to_have_text(TIME_ZONE)
        shots.doc("jobs")

        step = "workers"
        page.get_by_role("link", name="Workers").click()
        row = page.locator("tr[data-worker]")
        expect(row).to_have_count(1)
        expect(row.locator('[data-service="acme-ticker"]')).to_contain_text("running")
        expect(row.locator('[data-service="recording-worker"]')).to_contain_text("running")
        expect(row).to_contain_text("default")
        shots.doc("workers")

        step = "overview"
        page.get_by_role("link", name="Overview").click()
        expect(page.locator("figure.chart > svg")).to_be_visible()
        expect(page.locator("figure.chart")).to_contain_text("acme_echo: 3")
        # concurrency_per_business=2: two run, two are parked; the page shows it by polling
        expect(page.locator("#live")).to_contain_text("No business has work under a flow limit")
        for _ in range(4):
            enqueue(runtime, "acme_slot", bid, {"seconds": 30})
        flow = page.locator("#live tr", has_text="acme_slot")
        expect(flow).to_contain_text("2/2", timeout=30_000)
        expect(page.locator('tr[data-queue="flow"]')).to_contain_text("2")
        shots.doc("overview", full_page=True)
        page.get_by_role("link", name="Migrations & plugins").click()
        expect(page.get_by_test_id("drift")).to_contain_text("In sync")
        shots.doc("system", full_page=True)

        step = "phone"
        page.set_viewport_size(PHONE)
        page.goto(server.url + "/dashboard/jobs")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"] + 1, f"page is {width}px wide on a phone"
        shots.doc("phone")

        step = "no token in a log"
        log = server.log_path.read_text()
        assert "POST /dashboard/login" in log  # the access log is on
        assert admin not in log and admin not in worker.log()
    except BaseException as exc:
        path = shots.failed(step)
        raise AssertionError(f"step {step!r} failed (screenshot: {path}): {exc}") from exc
    finally:
        context.close()


def test_business_viewer_sees_only_its_jobs(browser, stack, runtime, tmp_path):
    from playwright.sync_api import expect

    server, _ = stack
    mine, token = business_with_token(runtime, "Mine")
    other, _ = business_with_token(runtime, "Other")
    my_job = enqueue(runtime, "acme_echo", mine, {"message": "mine"}).id
    their_job = enqueue(runtime, "acme_echo", other, {"message": "theirs"}).id
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    shots = Shots(page, tmp_path)
    try:
        page.goto(server.url + "/dashboard/")
        page.get_by_label("Token").fill(token)
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("viewer")).to_have_text(f"business {mine}")
        expect(page.get_by_role("link", name="Workers")).to_have_count(0)
        page.goto(server.url + "/dashboard/jobs")
        expect(page.locator(f'tr[data-job="{my_job}"]')).to_have_count(1)
        expect(page.locator(f'tr[data-job="{their_job}"]')).to_have_count(0)
        resp = page.goto(f"{server.url}/dashboard/jobs/{their_job}")
        assert resp.status == 404
    except BaseException as exc:
        path = shots.failed("business")
        raise AssertionError(f"failed (screenshot: {path}): {exc}") from exc
    finally:
        context.close()
