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
import re
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
    # input() gives an error finding on cell 3 (cells count from 0, the markdown included).
    make_notebook(
        root / "asks.ipynb",
        ["# Asks for a name", "x = 1", "print(x)", "name = input('who? ')\nprint(name)"],
        markdown=[0],
    )
    make_notebook(root / "tiny.ipynb", ["print('tiny job')"])
    # The magic's cell is left out of the job; the job itself sleeps long enough for the
    # widget to show it running.
    make_notebook(
        root / "widget_magic.ipynb",
        [
            "%load_ext jupyter_cloudpromote",
            "%cloud_submit --backend local",
            "import time\nprint('job started', flush=True)\ntime.sleep(8)\n"
            "print('job done', flush=True)",
        ],
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
    # The magic's widget-or-text choice must be its own (auto), not forced from outside.
    env.pop("CLOUDPROMOTE_DISPLAY", None)
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


def _api(lab: dict[str, Any], method: str, route: str, body: Any = None) -> Any:
    """Call the server extension's REST API as a script would (token header, no XSRF)."""
    request = urllib.request.Request(
        f"{lab['url']}/cloudpromote/{route}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {lab['token']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def _open_panel(page: Any) -> Any:
    panel = page.locator("#cloudpromote-jobs")
    if not panel.is_visible():
        page.locator(".jp-SideBar .lm-TabBar-tab[data-id='cloudpromote-jobs']").click()
    panel.wait_for()
    return panel


def _open_promote_dialog(page: Any) -> Any:
    _promote_button(page).click()
    # JupyterLab may mark a freshly opened file as changed (it adds cell ids): then the
    # save question comes first.
    dialog = page.locator(".jp-CloudPromote-dialog")
    ask = page.locator(".jp-Dialog", has_text="Save the notebook first?")
    dialog.or_(ask).first.wait_for()
    if ask.count():
        ask.get_by_role("button", name="Save and continue").click()
    dialog.locator(".jp-CloudPromote-steps").wait_for()
    return dialog


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

    # Step 2: the requirements, with where each came from, editable.
    dialog.get_by_role("button", name="Next").click()
    table = dialog.locator(".jp-CloudPromote-requirements")
    table.wait_for()
    first = dialog.get_by_label("Requirement 1", exact=True)
    detected = first.input_value()
    assert detected.startswith("packaging=="), detected
    first_row = table.locator("tr", has=page.get_by_label("Requirement 1", exact=True))
    assert "import" in first_row.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "03-dialog-requirements.png"))
    # A line that is no requirement is refused by the server's preview, in place.
    dialog.get_by_role("button", name="Add requirement").click()
    dialog.get_by_label("Requirement 2", exact=True).fill("not a requirement!!")
    dialog.get_by_role("button", name="Next").click()
    refusal = dialog.get_by_role("alert")
    refusal.wait_for()
    assert "not a requirement!!" in refusal.inner_text() and "Fix:" in refusal.inner_text()
    assert table.is_visible()  # still on the requirements step
    page.screenshot(path=str(SCREENSHOTS / "03b-dialog-requirement-refused.png"))
    dialog.get_by_role("button", name="Remove requirement 2 (not a requirement!!)").click()
    # Edit, reset to detected, edit again and add a line.
    reset = dialog.get_by_role("button", name="Reset to detected")
    assert reset.is_disabled()
    first.fill("packaging>=20")
    assert "edited" in first_row.inner_text()
    reset.click()
    assert first.input_value() == detected
    first.fill("packaging>=20")
    dialog.get_by_role("button", name="Add requirement").click()
    # A marker false on Python 3: written to requirements.txt, ignored by pip.
    edited_lines = ["packaging>=20", 'tomli==2.0.1; python_version < "3"']
    dialog.get_by_label("Requirement 2", exact=True).fill(edited_lines[1])
    assert table.locator("tr", has_text="added").count() == 1

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
    # The review was previewed with the edited requirements.
    assert "2 edited requirement(s)" in dialog.inner_text()
    assert dialog.get_by_label("Requirements to install").text_content() == "\n".join(edited_lines)
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
    # The detail tabs follow the WAI-ARIA tabs pattern: only the selected tab is in the
    # Tab order, and the arrow keys move to (and select) the next tab.
    tabs = page.get_by_role("tablist", name="Job details")
    logs_tab = tabs.get_by_role("tab", name="Logs")
    outputs_tab = tabs.get_by_role("tab", name="Outputs")
    logs_tab.click()
    assert logs_tab.get_attribute("aria-selected") == "true"
    assert [t.get_attribute("tabindex") for t in tabs.get_by_role("tab").all()] == [
        "0",
        "-1",
        "-1",
        "-1",
    ]
    logs_tab.focus()
    page.keyboard.press("ArrowRight")
    assert outputs_tab.get_attribute("aria-selected") == "true"
    assert logs_tab.get_attribute("aria-selected") == "false"
    assert outputs_tab.evaluate("el => el === document.activeElement")
    assert outputs_tab.get_attribute("tabindex") == "0"
    panel_id = outputs_tab.get_attribute("aria-controls")
    assert page.locator(f"#{panel_id}").is_visible()
    page.get_by_label("Output files").get_by_text("result.txt").wait_for()
    page.keyboard.press("End")
    history_tab = tabs.get_by_role("tab", name="History")
    assert history_tab.get_attribute("aria-selected") == "true"
    assert history_tab.evaluate("el => el === document.activeElement")
    page.keyboard.press("ArrowRight")  # wraps around to the first tab
    assert logs_tab.get_attribute("aria-selected") == "true"
    assert logs_tab.evaluate("el => el === document.activeElement")
    # The job was packaged with exactly the edited requirement lines.
    artifacts = {a["name"]: a["text"] for a in _api(lab, "GET", f"jobs/{job_id}")["artifacts"]}
    assert artifacts["requirements"].splitlines() == edited_lines

    # Chromium logs every 4xx answer; the one refused preview of the bad line was expected.
    errors = _ours(page.cloudpromote_errors)
    refused = [e for e in errors if "status of 400" in e and e.endswith("/cloudpromote/preview")]
    assert len(refused) == 1, errors
    assert [e for e in errors if e not in refused] == []


def test_cancel_long_job_from_panel(page: Any, lab: dict[str, Any]) -> None:
    _open_notebook(page, lab, "sleeper.ipynb")
    dialog = _open_promote_dialog(page)
    page.screenshot(path=str(SCREENSHOTS / "08-dialog-long-job.png"))
    assert "sleeper.ipynb" in page.locator(".jp-Dialog-header").inner_text()
    dialog.get_by_role("button", name="4. Review").click()
    dialog.get_by_role("button", name="Submit").click()
    dialog.wait_for(state="detached")

    job_id = _submitted_job_id(page)
    assert "sleeper.ipynb" in _job_row(page, job_id).inner_text()
    _wait_for_status(page, lab, job_id, "running")
    page.screenshot(path=str(SCREENSHOTS / "09-panel-running.png"))
    # At the default sidebar width the filter selects show their whole label ("All
    # backends", not "All backend"): each is at least as wide as its text plus padding.
    panel = _open_panel(page)
    panel.screenshot(path=str(SCREENSHOTS / "09b-panel-filters.png"))
    for label in ("Filter by status", "Filter by backend"):
        fits = page.get_by_label(label).evaluate(_SELECT_FITS_JS)
        assert fits["text"] <= fits["room"], (label, fits)
    page.get_by_role("button", name=f"Cancel job {job_id}").click()
    _wait_for_status(page, lab, job_id, "cancelled")
    page.screenshot(path=str(SCREENSHOTS / "10-panel-cancelled.png"))
    # The status filter narrows the list to the cancelled job.
    page.get_by_label("Filter by status").select_option("cancelled")
    rows = page.locator(".jp-CloudPromote-job")
    assert rows.count() >= 1
    assert all(s == "cancelled" for s in rows.evaluate_all("r => r.map(e => e.dataset.status)"))

    assert _ours(page.cloudpromote_errors) == []


# Width of a select's shown option text against the room its box leaves for it.
_SELECT_FITS_JS = """el => {
  const style = getComputedStyle(el);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = style.font;
  const text = ctx.measureText(el.options[el.selectedIndex].text).width;
  const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return { text, room };
}"""


# --- theme, finding navigation, the magic's widget ------------------------------------------

# Paint of an element as the eye sees it: its text colour over the backgrounds composited
# from the root down (alpha included), the WCAG contrast ratio between them, and the
# background's relative luminance.
_PAINT_JS = """el => {
  const parse = text => {
    const m = text.match(/rgba?\\(([^)]*)\\)/);
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const over = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1
  });
  const lum = c => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const chain = [];
  for (let node = el; node; node = node.parentElement) chain.unshift(node);
  let bg = { r: 255, g: 255, b: 255, a: 1 };
  for (const node of chain) {
    const own = parse(getComputedStyle(node).backgroundColor);
    if (own.a > 0) bg = over(own, bg);
  }
  const fg = over(parse(getComputedStyle(el).color), bg);
  const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return {
    background: getComputedStyle(el).backgroundColor,
    contrast: (hi + 0.05) / (lo + 0.05),
    backgroundLuminance: lum(bg)
  };
}"""

# What a CSS variable of the current theme resolves to, as a computed background colour.
_VAR_COLOR_JS = """name => {
  const probe = document.createElement('div');
  probe.style.background = `var(${name})`;
  document.body.appendChild(probe);
  const value = getComputedStyle(probe).backgroundColor;
  probe.remove();
  return value;
}"""


def _paint(locator: Any) -> dict[str, Any]:
    return dict(locator.first.evaluate(_PAINT_JS))


def _set_theme(page: Any, theme: str, light: bool) -> None:
    """Switch the theme as a user does: Settings > Theme > the theme's name."""

    def item(label: str) -> Any:
        text = page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(label)}$"))
        return page.locator(".lm-Menu-item", has=text)

    page.locator(".lm-MenuBar-item", has_text="Settings").click()
    item("Theme").hover()
    item(theme).click()
    page.wait_for_function(
        "([name, light]) => document.body.dataset.jpThemeName === name && "
        "document.body.dataset.jpThemeLight === String(light)",
        arg=[theme, light],
    )


def _active_cell_index(page: Any) -> int:
    return int(
        page.evaluate(
            """() => Array.from(document.querySelectorAll(
                 '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell'))
               .findIndex(cell => cell.classList.contains('jp-mod-active'))"""
        )
    )


def _reset_theme(lab: dict[str, Any]) -> None:
    """Back to the default theme for the other tests (the choice is a saved user setting)."""
    request = urllib.request.Request(
        f"{lab['url']}/lab/api/settings/@jupyterlab/apputils-extension:themes",
        method="PUT",
        data=json.dumps({"raw": "{}"}).encode(),
        headers={"Authorization": f"token {lab['token']}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=30).close()


def test_dark_theme_panel_and_dialog_follow_it_and_findings_show_their_cell(
    page: Any, lab: dict[str, Any]
) -> None:
    # A finished job, so the panel has a row to select and read.
    job = _api(lab, "POST", "jobs", {"path": "tiny.ipynb", "backend": "local"})
    _open_notebook(page, lab, "asks.ipynb")
    panel = _open_panel(page)
    _wait_for_status(page, lab, job["id"], "succeeded")
    light_panel = _paint(panel)
    assert light_panel["background"] == page.evaluate(_VAR_COLOR_JS, "--jp-layout-color1")
    assert light_panel["backgroundLuminance"] > 0.6
    try:
        _set_theme(page, "JupyterLab Dark", light=False)
        dark_panel = _paint(panel)
        # The panel takes the theme's colours, live, without a reload.
        assert dark_panel["background"] == page.evaluate(_VAR_COLOR_JS, "--jp-layout-color1")
        assert dark_panel["background"] != light_panel["background"]
        assert dark_panel["backgroundLuminance"] < 0.05
        _job_row(page, job["id"]).click()
        selected = page.locator(f".jp-CloudPromote-job.jp-mod-selected[data-job-id='{job['id']}']")
        selected.wait_for()
        # Readable text (WCAG AA: 4.5 for body text, 3 for the small secondary text).
        for what, locator, least in (
            ("panel title", panel.locator(".jp-CloudPromote-title"), 4.5),
            ("selected job name", selected.locator(".jp-CloudPromote-jobName"), 4.5),
            ("job meta", selected.locator(".jp-CloudPromote-jobMeta span"), 3),
            ("status badge", selected.locator(".jp-CloudPromote-status"), 3),
        ):
            contrast = _paint(locator)["contrast"]
            assert contrast >= least, f"{what}: contrast {contrast:.2f} under the dark theme"
        page.screenshot(path=str(SCREENSHOTS / "11-dark-panel.png"))

        # The dialog under the dark theme; a finding's cell control selects that cell.
        dialog = _open_promote_dialog(page)
        finding = dialog.locator(".jp-CloudPromote-finding.jp-CloudPromote-severity-error")
        finding.wait_for()
        assert "input()" in finding.inner_text()
        content = page.locator(".jp-CloudPromote-dialogHost .jp-Dialog-content")
        assert _paint(content)["backgroundLuminance"] < 0.05
        for what, locator in (
            ("finding", finding.locator("div").first),
            ("fix", finding.locator(".jp-CloudPromote-fix")),
            ("step button", dialog.locator(".jp-CloudPromote-stepButton").first),
        ):
            contrast = _paint(locator)["contrast"]
            assert contrast >= 4.5, f"{what}: contrast {contrast:.2f} under the dark theme"
        page.screenshot(path=str(SCREENSHOTS / "12-dark-dialog-findings.png"))
        assert _active_cell_index(page) != 3
        finding.get_by_role("button", name="Show cell 4 in the notebook").click()
        page.wait_for_function(
            """() => Array.from(document.querySelectorAll(
                 '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell'))
               .findIndex(cell => cell.classList.contains('jp-mod-active')) === 3"""
        )
        active = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell.jp-mod-active")
        assert "input('who? ')" in active.inner_text()

        dialog.get_by_role("button", name="2. Requirements").click()
        dialog.get_by_role("button", name="Add requirement").click()
        field = dialog.get_by_label("Requirement 1", exact=True)
        field.fill("numpy==1.26.4")
        assert _paint(field)["contrast"] >= 4.5
        page.screenshot(path=str(SCREENSHOTS / "13-dark-dialog-requirements.png"))
        dialog.get_by_role("button", name="4. Review").click()
        code = dialog.get_by_label("Promoted script")
        assert _paint(code)["contrast"] >= 4.5
        page.screenshot(path=str(SCREENSHOTS / "14-dark-dialog-review.png"))
        page.locator(".jp-Dialog").get_by_role("button", name="Close").click()
        dialog.wait_for(state="detached")
    finally:
        _reset_theme(lab)
    assert page.cloudpromote_errors == []


def test_magic_widget_updates_live_in_jupyterlab(page: Any, lab: dict[str, Any]) -> None:
    sent: list[bytes] = []

    def watch(socket: Any) -> None:
        if "/api/kernels/" in socket.url:
            socket.on(
                "framesent",
                lambda payload: sent.append(
                    payload if isinstance(payload, bytes) else payload.encode()
                ),
            )

    page.on("websocket", watch)
    _open_notebook(page, lab, "widget_magic.ipynb")
    # Record every stage the widget shows, however briefly, from before it exists.
    page.evaluate(
        """() => {
          window.cloudpromoteStages = [];
          const seen = () => {
            const el = document.querySelector('.jp-OutputArea .cloudpromote-step-current');
            const text = el ? el.textContent.replace(/^\\W+/, '').trim() : null;
            const list = window.cloudpromoteStages;
            if (text && list[list.length - 1] !== text) list.push(text);
          };
          new MutationObserver(seen).observe(document.body, {
            subtree: true, childList: true, characterData: true
          });
        }"""
    )
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    notebook.locator(".jp-Cell").first.click()
    page.keyboard.press("Escape")  # command mode: Shift+Enter runs and moves on
    # The magic refuses a notebook with unsaved changes: save first, as a user would.
    page.keyboard.press("Control+s")
    page.locator(
        "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current:not(.jp-mod-dirty)",
        has_text="widget_magic.ipynb",
    ).wait_for()
    page.keyboard.press("Shift+Enter")  # %load_ext jupyter_cloudpromote
    page.keyboard.press("Shift+Enter")  # %cloud_submit --backend local

    widget = notebook.locator(".jp-Cell").nth(1).locator(".jp-OutputArea .widget-vbox")
    widget.wait_for(timeout=JOB_TIMEOUT_MS)
    header = widget.locator("code").first
    header.wait_for(timeout=JOB_TIMEOUT_MS)
    job_id = header.inner_text().strip()
    page.screenshot(path=str(SCREENSHOTS / "15-magic-widget-early.png"))
    done = widget.locator(".cloudpromote-step-done", has_text="finished")
    done.wait_for(timeout=JOB_TIMEOUT_MS)
    # The status label ("succeeded · 12s"), not the progress bar's empty description.
    widget.locator(".widget-label", has_text="succeeded").wait_for()
    assert widget.locator(".cloudpromote-step-failed").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "16-magic-widget-succeeded.png"))

    stages = page.evaluate("() => window.cloudpromoteStages")
    assert stages, "the widget never showed a current stage"
    assert stages[0] in ("checking", "building", "queued"), stages
    assert "running" in stages, stages
    assert stages.index("running") > 0

    # The same job, submitted from the kernel, is in the Jobs panel.
    _open_panel(page)
    _wait_for_status(page, lab, job_id, "succeeded")
    assert "widget_magic.ipynb" in _job_row(page, job_id).inner_text()
    page.screenshot(path=str(SCREENSHOTS / "17-magic-job-in-panel.png"))

    # JupyterLab sends the cell id with execute requests: the magic's widget-or-text
    # choice depends on it (headless executors do not send one).
    saved = json.loads((lab["root"] / "widget_magic.ipynb").read_text())
    submit_cell_id = saved["cells"][1]["id"]
    requests = [f for f in sent if b"execute_request" in f and b"%cloud_submit" in f]
    assert requests, "no execute request for the %cloud_submit cell was seen"
    assert f'"cellId": "{submit_cell_id}"'.encode() in requests[0].replace(b'":"', b'": "')
    assert _ours(page.cloudpromote_errors) == []
