"""The JupyterLab front end in a real browser: a real `jupyter lab` subprocess with the
server extension and the built lab extension, driven in Debian's Chromium by Playwright.

Walks what a user does: open a notebook, click "Promote to job", read the findings and
requirements in the dialog, submit to the `local` backend, watch the job succeed in the
panel and read its log; then start a long job and cancel it from the panel. Screenshots
go to .artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, make_notebook, require

pytestmark = pytest.mark.slow

LABEXTENSION = REPO_ROOT / "jupyter_cloudpromote" / "labextension"
SCREENSHOTS = REPO_ROOT / ".artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Generous upper bounds for waits (not assertions about speed): a job on `local` creates a
# virtualenv and installs its requirements from the package index.
JOB_TIMEOUT_MS = 120_000
UI_TIMEOUT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_notebooks(root: Path) -> None:
    make_notebook(
        root / "hello.ipynb",
        [
            ("greeting = 'hello'\nrepeat = 3", ["parameters"]),
            "import os\n"
            "from pathlib import Path\n"
            "import packaging.version\n"
            "out = Path(os.environ.get('CLOUDPROMOTE_OUTPUT_DIR', 'outputs'))\n"
            "out.mkdir(parents=True, exist_ok=True)\n"
            "(out / 'result.txt').write_text(greeting * repeat)\n"
            "print('hello from the job', greeting * repeat, packaging.version.Version('1.0'))",
        ],
    )
    make_notebook(
        root / "sleeper.ipynb",
        ["import time\nprint('sleeping', flush=True)\ntime.sleep(600)"],
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require(
        (LABEXTENSION / "package.json").is_file(),
        f"lab extension not built at {LABEXTENSION}; run .ci/build-labextension.sh",
    )
    require(Path(CHROMIUM).exists(), "chromium not installed; run .ci/setup-browser.sh")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Python playwright not installed (pip install playwright)")

    base = tmp_path_factory.mktemp("lab")
    root, data, config, runtime = (base / n for n in ("root", "data", "config", "runtime"))
    for folder in (root, data / "labextensions", config, runtime):
        folder.mkdir(parents=True)
    _write_notebooks(root)
    # The source tree's build, served as an installed federated extension.
    (data / "labextensions" / "jupyter-cloudpromote").symlink_to(LABEXTENSION)
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_cloudpromote": True}}})
    )
    env = {
        **os.environ,
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    port, token = _free_port(), secrets.token_hex(16)
    log = (base / "lab.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail("jupyter lab did not start:\n" + (base / "lab.log").read_text()[-4000:])
            time.sleep(0.5)
    try:
        yield {"url": url, "token": token, "root": root, "log": base / "lab.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture()
def page(lab: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        errors: list[str] = []
        page.on(
            "console",
            lambda msg: (
                errors.append(f"{msg.text} @ {msg.location.get('url', '')}")
                if msg.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}\n{exc.stack or ''}"))
        page.cloudpromote_errors = errors  # type: ignore[attr-defined]
        yield page
        context.close()
        browser.close()


def _ours(errors: list[str]) -> list[str]:
    return [e for e in errors if "cloudpromote" in e.lower()]


def _open_notebook(page: Any, lab: dict[str, Any], name: str) -> None:
    # A workspace of its own, reset: no tab restored from an earlier test.
    workspace = Path(name).stem
    page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}")
    page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current", has_text=name).wait_for()
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")


def _promote_button(page: Any) -> Any:
    return page.locator(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-NotebookPanel-toolbar "
        "[data-command='cloudpromote:promote']"
    )


def _job_row(page: Any, job_id: str) -> Any:
    return page.locator(f".jp-CloudPromote-job[data-job-id='{job_id}']")


def _wait_for_status(page: Any, lab: dict[str, Any], job_id: str, status: str) -> None:
    """Wait until the panel shows the job in `status`; on timeout say what server and panel had."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    row = page.locator(f".jp-CloudPromote-job[data-job-id='{job_id}'][data-status='{status}']")
    try:
        row.wait_for(timeout=JOB_TIMEOUT_MS)
    except PlaywrightTimeout:
        shown = _job_row(page, job_id).get_attribute("data-status")
        url = f"{lab['url']}/cloudpromote/jobs/{job_id}?token={lab['token']}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            server = json.load(answer)
        page.screenshot(path=str(SCREENSHOTS / f"failed-{job_id}.png"))
        pytest.fail(
            f"job {job_id}: panel shows {shown!r}, server says {server['status']!r} "
            f"({server.get('reason')!r}), expected {status!r}"
        )


def _submitted_job_id(page: Any) -> str:
    selected = page.locator(".jp-CloudPromote-job.jp-mod-selected")
    selected.wait_for()
    return str(selected.get_attribute("data-job-id"))


def test_promote_notebook_in_browser_runs_to_succeeded(page: Any, lab: dict[str, Any]) -> None:
    _open_notebook(page, lab, "hello.ipynb")
    button = _promote_button(page)
    button.wait_for()
    assert "Promote to job" in button.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "01-notebook-toolbar.png"))

    # An unsaved edit: promoting asks to save first, since the job runs the saved file.
    page.locator(".jp-Cell .cm-content").first.click()
    page.keyboard.press("End")
    page.keyboard.press("Control+End")
    page.keyboard.type("\n# edited before promotion")
    button.click()
    ask = page.locator(".jp-Dialog", has_text="Save the notebook first?")
    ask.get_by_role("button", name="Save and continue").click()
    dialog = page.locator(".jp-CloudPromote-dialog")
    dialog.wait_for()
    assert "# edited before promotion" in (lab["root"] / "hello.ipynb").read_text()
    # Step 1: the readiness findings, each with a fix (a fresh notebook was never run).
    finding = dialog.locator(".jp-CloudPromote-finding[data-code='never-run']")
    finding.wait_for()
    assert "Fix:" in finding.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "02-dialog-findings.png"))

    # Step 2: the requirements, with where each came from.
    dialog.get_by_role("button", name="Next").click()
    table = dialog.locator(".jp-CloudPromote-requirements")
    table.wait_for()
    row = table.locator("tr", has_text="packaging")
    assert "import" in row.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "03-dialog-requirements.png"))

    # Step 3: backend, resources, typed parameters.
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Backend profile").select_option("local")
    repeat = dialog.locator("input[name='param-repeat']")
    assert repeat.get_attribute("type") == "number"
    repeat.fill("2")
    repeat.press("Enter")  # Enter in a field must not close the dialog
    assert dialog.is_visible()
    page.screenshot(path=str(SCREENSHOTS / "04-dialog-configure.png"))

    # Step 4: review with the script and the Dockerfile; submit.
    dialog.get_by_role("button", name="Next").click()
    script = dialog.get_by_label("Promoted script")
    assert "hello from the job" in script.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "05-dialog-review.png"))
    dialog.get_by_role("button", name="Submit").click()
    dialog.wait_for(state="detached")

    # The panel opens with the new job selected, and live events carry it to succeeded.
    job_id = _submitted_job_id(page)
    row = _job_row(page, job_id)
    assert "hello.ipynb" in row.inner_text()
    _wait_for_status(page, lab, job_id, "succeeded")

    # Its run log, read in the panel, shows the overridden parameter's effect.
    page.get_by_role("radio", name="Run").check()
    log = page.locator(".jp-CloudPromote-logText")
    page.wait_for_function(
        "el => el.textContent.includes('hello from the job hellohello')",
        arg=log.element_handle(),
        timeout=UI_TIMEOUT_MS,
    )
    page.screenshot(path=str(SCREENSHOTS / "06-panel-succeeded-logs.png"))

    # Outputs are listed; the promoted files are reachable.
    page.get_by_role("tab", name="Outputs").click()
    page.get_by_label("Output files").get_by_text("result.txt").wait_for()
    page.get_by_role("tab", name="Files").click()
    page.get_by_label("Promoted files").get_by_text("requirements.txt").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "07-panel-files.png"))

    assert _ours(page.cloudpromote_errors) == []


def test_cancel_long_job_from_panel(page: Any, lab: dict[str, Any]) -> None:
    _open_notebook(page, lab, "sleeper.ipynb")
    _promote_button(page).click()
    # JupyterLab may mark a freshly opened file as changed (it adds cell ids): then the
    # save question comes first.
    dialog = page.locator(".jp-CloudPromote-dialog")
    ask = page.locator(".jp-Dialog", has_text="Save the notebook first?")
    dialog.or_(ask).first.wait_for()
    if ask.count():
        ask.get_by_role("button", name="Save and continue").click()
    dialog.locator(".jp-CloudPromote-steps").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "08-dialog-long-job.png"))
    assert "sleeper.ipynb" in page.locator(".jp-Dialog-header").inner_text()
    dialog.get_by_role("button", name="4. Review").click()
    dialog.get_by_role("button", name="Submit").click()
    dialog.wait_for(state="detached")

    job_id = _submitted_job_id(page)
    assert "sleeper.ipynb" in _job_row(page, job_id).inner_text()
    _wait_for_status(page, lab, job_id, "running")
    page.screenshot(path=str(SCREENSHOTS / "09-panel-running.png"))
    page.get_by_role("button", name=f"Cancel job {job_id}").click()
    _wait_for_status(page, lab, job_id, "cancelled")
    page.screenshot(path=str(SCREENSHOTS / "10-panel-cancelled.png"))
    # The status filter narrows the list to the cancelled job.
    page.get_by_label("Filter by status").select_option("cancelled")
    rows = page.locator(".jp-CloudPromote-job")
    assert rows.count() >= 1
    assert all(s == "cancelled" for s in rows.evaluate_all("r => r.map(e => e.dataset.status)"))

    assert _ours(page.cloudpromote_errors) == []
