# ruff: noqa: F811  (pytest fixtures imported from test_server_api are redefined as arguments)
"""Edited requirements: PromotionOptions.requirements replaces the resolved requirements.

The same option through every way in: the pipeline (promote), the REST API (preview and
jobs), and the CLI (--requirement LINE, repeatable). The JupyterLab dialog that edits them
is tested in tests/test_lab_browser.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement as PackagingRequirement
from pytest_jupyter.jupyter_server import *  # noqa: F403

from jupyter_cloudpromote.config import CloudPromote
from jupyter_cloudpromote.errors import ConfigError
from jupyter_cloudpromote.models import PromotionOptions
from jupyter_cloudpromote.pipeline import parse_edited_requirements, promote
from jupyter_cloudpromote.server import schemas
from jupyter_cloudpromote.server.app import CloudPromoteService

from .conftest import make_notebook
from .test_cli import cli
from .test_server_api import (  # noqa: F401  (fixtures used by name)
    OPENAPI,
    Run,
    call,
    jp_server_config,
    run,
    service,
    shared_venv_cache,
    terminal,
    wait_status,
)

# A marker that is false on every Python 3: pip lists it as ignored and downloads nothing,
# so a real job can carry an edited line without reaching the package index.
NEVER = 'python_version < "3"'


@pytest.fixture()
def importing_notebook(tmp_path: Path) -> Path:
    # packaging is installed in the test interpreter's kernel, so it resolves to a pin.
    return make_notebook(
        tmp_path / "nb" / "uses_packaging.ipynb",
        ["import packaging.version\nprint(packaging.version.Version('1.0'))"],
    )


# --- the pipeline -------------------------------------------------------------------------------


def test_parse_edited_requirements_keeps_specifiers_extras_urls_and_markers() -> None:
    lines = [
        "  pandas==2.1.3  ",
        "",
        "# a comment the user left",
        "requests[socks,security]>=2.31; python_version >= '3.8'",
        f"wheelpkg @ https://example.org/wheelpkg-1.0-py3-none-any.whl ; {NEVER}",
    ]
    parsed = parse_edited_requirements(lines)
    assert [r.name for r in parsed] == ["pandas", "requests", "wheelpkg"]
    assert {r.source for r in parsed} == {"edited"}
    assert parsed[0].pep508 == "pandas==2.1.3"
    assert parsed[1].extras == ("security", "socks")
    # Each line written back parses to the same requirement (URL + marker included).
    for line, requirement in zip([lines[0], lines[3], lines[4]], parsed, strict=True):
        assert str(PackagingRequirement(requirement.pep508)) == str(
            PackagingRequirement(line.strip())
        )


@pytest.mark.parametrize(
    "bad",
    ["pandas===", "--index-url https://evil.example/simple", "-r other.txt", "numpy\nscipy"],
)
def test_bad_edited_line_is_a_config_error_naming_the_line_and_the_fix(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_edited_requirements(["numpy==1.26.4", bad])
    assert repr(bad.strip()) in caught.value.message
    assert "PEP 508" in caught.value.fix and "pip_index_url" in caught.value.fix


def test_promote_uses_exactly_the_edited_requirements(importing_notebook: Path) -> None:
    settings = CloudPromote()
    detected = promote(importing_notebook, PromotionOptions(), settings).to_preview()
    assert [d["name"] for d in detected["requirement_details"]] == ["packaging"]
    assert detected["requirement_details"][0]["source"] == "import"

    edited = ["packaging>=20", "", f"tomli==2.0.1; {NEVER}"]
    before = importing_notebook.read_bytes()
    promotion = promote(importing_notebook, PromotionOptions(requirements=edited), settings)
    preview = promotion.to_preview()
    assert preview["requirements"] == ["packaging>=20", f"tomli==2.0.1; {NEVER}"]
    assert [(d["name"], d["source"]) for d in preview["requirement_details"]] == [
        ("packaging", "edited"),
        ("tomli", "edited"),
    ]
    assert "requirements-edited" in {f["code"] for f in preview["findings"]}
    assert "edited-requirement-missing" not in {f["code"] for f in preview["findings"]}
    assert importing_notebook.read_bytes() == before

    # An empty list means "install nothing", which is not the same as "not edited".
    nothing = promote(importing_notebook, PromotionOptions(requirements=[]), settings)
    assert nothing.resolved.requirements == []
    dropped = [f for f in nothing.findings if f.code == "edited-requirement-missing"]
    assert len(dropped) == 1 and "packaging" in dropped[0].message
    assert "packaging==" in dropped[0].fix


def test_promote_refuses_a_bad_edited_line(importing_notebook: Path) -> None:
    with pytest.raises(ConfigError, match="not a requirement"):
        promote(
            importing_notebook,
            PromotionOptions(requirements=["packaging", "not a requirement"]),
            CloudPromote(),
        )


# --- the REST API -------------------------------------------------------------------------------


def test_openapi_promotion_request_lists_every_accepted_field() -> None:
    spec = yaml.safe_load(OPENAPI.read_text())
    request = spec["components"]["schemas"]["PromotionRequest"]
    assert set(request["properties"]) == schemas._PROMOTION_FIELDS
    assert request["properties"]["requirements"]["items"] == {"type": "string"}


def test_api_preview_with_edited_requirements_and_bad_lines(
    jp_fetch: Any, run: Run, jp_root_dir: Path
) -> None:
    make_notebook(jp_root_dir / "uses.ipynb", ["import packaging\nprint(packaging.__name__)"])
    code, data = run(
        call(
            jp_fetch,
            "POST",
            "preview",
            body={"path": "uses.ipynb", "requirements": ["packaging>=21", "attrs"]},
        )
    )
    assert code == 200, data
    assert data["requirements"] == ["packaging>=21", "attrs"]
    assert {d["source"] for d in data["requirement_details"]} == {"edited"}

    code, data = run(call(jp_fetch, "POST", "preview", body={"path": "uses.ipynb"}))
    assert code == 200 and data["requirement_details"][0]["source"] == "import"

    code, reply = run(
        call(
            jp_fetch,
            "POST",
            "preview",
            body={"path": "uses.ipynb", "requirements": ["packaging", "two words"]},
        )
    )
    assert code == 400, reply
    assert "two words" in reply["message"] and "PEP 508" in reply["fix"]

    for bad, field in (
        ("packaging", "requirements"),
        ([7], "requirements[0]"),
        (["a\nb"], "requirements[0]"),
    ):
        code, reply = run(
            call(jp_fetch, "POST", "preview", body={"path": "uses.ipynb", "requirements": bad})
        )
        assert code == 400 and reply["field"] == field, reply


@pytest.mark.slow
def test_api_submit_packs_the_edited_requirements(
    jp_fetch: Any, run: Run, jp_root_dir: Path, service: CloudPromoteService
) -> None:
    make_notebook(jp_root_dir / "plain.ipynb", ["print('edited job ran')"])
    lines = [f"tomli==2.0.1; {NEVER}", f"six; {NEVER}"]
    code, bad = run(
        call(jp_fetch, "POST", "jobs", body={"path": "plain.ipynb", "requirements": ["x y"]})
    )
    assert code == 400 and "x y" in bad["message"]
    assert service.manager.store.count() == 0

    code, job = run(
        call(jp_fetch, "POST", "jobs", body={"path": "plain.ipynb", "requirements": lines})
    )
    assert code == 201, job
    final = run(wait_status(jp_fetch, job["id"], terminal))
    assert final["status"] == "succeeded", final
    artifact = next(a for a in final["artifacts"] if a["name"] == "requirements")
    assert artifact["text"].splitlines() == lines


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_requirement_flag_replaces_the_detected_requirements(
    isolated_jupyter: Path, importing_notebook: Path
) -> None:
    data = json.loads(
        cli(
            "preview",
            str(importing_notebook),
            "--json",
            "--requirement",
            "packaging>=22",
            "--requirement",
            "attrs==23.1.0",
        ).stdout
    )
    assert data["requirements"] == ["packaging>=22", "attrs==23.1.0"]
    assert {d["source"] for d in data["requirement_details"]} == {"edited"}

    refused = cli("preview", str(importing_notebook), "--requirement", "not valid!", check=False)
    assert refused.returncode == 2
    assert "not valid!" in refused.stderr and "PEP 508" in refused.stderr
