# ruff: noqa: F811  (pytest fixtures imported from test_server_api are redefined as arguments)
"""Security of the REST API: authentication, authorization, XSRF, path confinement."""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth import Authorizer
from pytest_jupyter.jupyter_server import *  # noqa: F403
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets.config import Config

from jupyter_cloudpromote.models import JobState
from jupyter_cloudpromote.server.app import CloudPromoteService
from jupyter_cloudpromote.server.handlers import ROUTES, handler_methods

from .conftest import make_notebook
from .test_server_api import (  # noqa: F401 - fixtures
    Run,
    call,
    digest,
    insert_job,
    run,
    server_config,
    service,
    shared_venv_cache,
)

JOB_ID = "abcdef012345"


@pytest.fixture()
def jp_server_config(shared_venv_cache: Path, request: pytest.FixtureRequest) -> Config:
    config = server_config(shared_venv_cache)
    if getattr(request, "param", None) == "recording-authorizer":
        config.ServerApp.authorizer_class = RecordingAuthorizer
    return config


def every_route(job_id: str = JOB_ID) -> list[tuple[str, str]]:
    """(method, path under cloudpromote/) for every registered route and method."""
    found = []
    for path, handler in ROUTES:
        concrete = path.replace("{job_id}", job_id).replace("{path}", "out.txt").lstrip("/")
        for method in sorted(handler_methods(handler)):
            found.append((method.upper(), concrete))
    return found


def _url(jp_serverapp: Any, jp_base_url: str, path: str) -> str:
    return f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}{path}"


async def raw_fetch(
    url: str, method: str, headers: dict[str, str], body: bytes | None = None
) -> Any:
    request = HTTPRequest(
        url,
        method=method,
        headers=headers,
        body=body if body is not None else (b"{}" if method in ("POST", "PUT") else None),
        allow_nonstandard_methods=True,
        follow_redirects=False,
        request_timeout=20,
    )
    return await AsyncHTTPClient().fetch(request, raise_error=False)


@pytest.mark.parametrize("credentials", [None, "token wrong-token"])
def test_every_route_refuses_unauthenticated_requests(
    jp_serverapp: Any,
    http_server_client: Any,
    jp_base_url: str,
    run: Run,
    service: CloudPromoteService,
    credentials: str | None,
) -> None:
    insert_job(service, JOB_ID)
    routes = every_route()
    assert len(routes) == sum(len(handler_methods(h)) for _p, h in ROUTES) >= 12
    for method, path in routes:
        headers = {"Authorization": credentials} if credentials else {}
        response = run(
            raw_fetch(_url(jp_serverapp, jp_base_url, "cloudpromote/" + path), method, headers)
        )
        assert response.code in (401, 403), (method, path, response.code)
        assert JOB_ID.encode() not in (response.body or b""), (method, path)
    # The job is untouched: nothing ran behind the refusal.
    assert service.manager.store.get(JOB_ID).state is JobState.SUCCEEDED


class RecordingAuthorizer(Authorizer):
    """Allows everything except the cloudpromote resource when `deny` is set; records asks."""

    asked: list[tuple[str, str]] = []
    deny = False

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if resource == "cloudpromote":
            type(self).asked.append((handler.request.method, action))
            return not type(self).deny
        return True


@pytest.mark.parametrize("jp_server_config", ["recording-authorizer"], indirect=True)
@pytest.mark.parametrize("deny", [True, False])
def test_every_route_is_authorized_on_its_own_resource(
    jp_serverapp: Any, jp_fetch: Any, run: Run, service: CloudPromoteService, deny: bool
) -> None:
    RecordingAuthorizer.asked = []
    RecordingAuthorizer.deny = deny
    assert isinstance(jp_serverapp.authorizer, RecordingAuthorizer)
    insert_job(service, JOB_ID)
    for method, path in every_route():
        if (not deny and path.endswith("stream")) or (not deny and path == "events"):
            continue  # allowed streams stay open; their authorization is checked when denied
        code, _reply = run(
            call(jp_fetch, method, *path.split("/"), body={} if method == "POST" else None)
        )
        if deny:
            assert code == 403, (method, path, code)
        else:
            assert code != 403, (method, path, code)
    expected_action = {"GET": "read", "POST": "write", "DELETE": "write"}
    assert RecordingAuthorizer.asked, "the authorizer was never asked about 'cloudpromote'"
    assert all(expected_action[m] == a for m, a in RecordingAuthorizer.asked)
    # Other resources are not refused: the refusal is specific to the extension's resource.
    code, _ = run(call_api(jp_fetch, "api/contents"))
    assert code == 200


async def call_api(jp_fetch: Any, *parts: str) -> tuple[int, Any]:
    response = await jp_fetch(*parts, raise_error=False)
    return response.code, response.body


def test_cookie_authenticated_post_needs_the_xsrf_token(
    jp_serverapp: Any,
    http_server_client: Any,
    jp_base_url: str,
    run: Run,
    service: CloudPromoteService,
) -> None:
    token = jp_serverapp.identity_provider.token

    async def scenario() -> tuple[int, int, int]:
        login = await raw_fetch(_url(jp_serverapp, jp_base_url, "login"), "GET", {})
        cookies = _cookies(login)
        xsrf = cookies["_xsrf"]
        body = urllib.parse.urlencode({"_xsrf": xsrf, "password": token}).encode()
        logged_in = await raw_fetch(
            _url(jp_serverapp, jp_base_url, "login"),
            "POST",
            {
                "Cookie": _cookie_header(cookies),
                "Content-Type": "application/x-www-form-urlencoded",
            },
            body,
        )
        cookies.update(_cookies(logged_in))
        assert any(name.startswith("username-") for name in cookies), cookies
        url = _url(jp_serverapp, jp_base_url, "cloudpromote/jobs")
        read = await raw_fetch(url, "GET", {"Cookie": _cookie_header(cookies)})
        without = await raw_fetch(url, "POST", {"Cookie": _cookie_header(cookies)}, b"{}")
        with_token = await raw_fetch(
            url, "POST", {"Cookie": _cookie_header(cookies), "X-XSRFToken": xsrf}, b"{}"
        )
        return read.code, without.code, with_token.code

    read, without, with_token = run(scenario())
    assert read == 200  # the cookie authenticates
    assert without == 403  # but a state-changing request without the XSRF token is refused
    assert with_token == 400  # with it, the request reaches validation (an empty body)
    assert service.manager.store.count() == 0


def _cookies(response: Any) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        found[name.strip()] = rest.split(";", 1)[0]
    return found


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


# --- paths ----------------------------------------------------------------------------------------


@pytest.fixture()
def layout(jp_root_dir: Path, tmp_path: Path) -> dict[str, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret_nb = make_notebook(outside / "secret.ipynb", ["print('secret')"])
    (outside / "data.txt").write_text("secret data")
    inside = make_notebook(jp_root_dir / "sub" / "ok.ipynb", ["print('ok')"])
    (jp_root_dir / "link.ipynb").symlink_to(secret_nb)
    (jp_root_dir / "linkdir").symlink_to(outside, target_is_directory=True)
    (jp_root_dir / "sub" / "datalink").symlink_to(outside / "data.txt")
    make_notebook(jp_root_dir / ".hidden" / "h.ipynb", ["print('hidden')"])
    return {"outside": outside, "secret_nb": secret_nb, "inside": inside}


@pytest.mark.parametrize("verb", ["preview", "jobs"])
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"path": "../outside/secret.ipynb"}, 403, ".."),
        ({"path": "sub/../../outside/secret.ipynb"}, 403, ".."),
        ({"path": "sub\\..\\..\\outside\\secret.ipynb"}, 403, ".."),
        ({"path": "/etc/passwd"}, 400, "absolute"),
        ({"path": "C:/Windows/x.ipynb"}, 400, "absolute"),
        ({"path": "link.ipynb"}, 403, "outside"),
        ({"path": "linkdir/secret.ipynb"}, 403, "outside"),
        ({"path": "sub/ok.ipynb\u0000"}, 400, "NUL"),
        ({"path": "sub/ok.txt"}, 400, "not a notebook"),
        ({"path": "sub/none.ipynb"}, 404, "No notebook"),
        ({"path": ".hidden/h.ipynb"}, 403, "hidden"),
        ({"path": "sub/ok.ipynb", "include": ["../../outside/data.txt"]}, 403, "include[0]"),
        ({"path": "sub/ok.ipynb", "include": ["datalink"]}, 403, "outside"),
        ({"path": "sub/ok.ipynb", "include": ["/etc/passwd"]}, 400, "absolute"),
    ],
)
def test_paths_leaving_the_root_are_refused_with_a_4xx_that_says_why(
    jp_fetch: Any,
    run: Run,
    layout: dict[str, Path],
    service: CloudPromoteService,
    verb: str,
    body: dict[str, Any],
    status: int,
    words: str,
) -> None:
    before = {name: digest(path) for name, path in layout.items() if path.is_file()}
    code, reply = run(call(jp_fetch, "POST", verb, body=body))
    assert code == status, reply
    assert words in reply["message"], reply
    assert service.manager.store.count() == 0
    assert {name: digest(path) for name, path in layout.items() if path.is_file()} == before


def test_list_filter_and_output_downloads_are_confined(
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_base_url: str,
    run: Run,
    service: CloudPromoteService,
    tmp_path: Path,
) -> None:
    record = insert_job(service, JOB_ID)
    job_dir = Path(record.job_dir)
    (job_dir / "outputs" / "deep").mkdir(parents=True)
    (job_dir / "outputs" / "deep" / "fine.txt").write_text("fine")
    (job_dir / "context").mkdir()
    (job_dir / "context" / "job.py").write_text("print('code')")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    # What a hostile job could leave behind in its outputs folder:
    (job_dir / "outputs" / "escape").symlink_to(secret)
    (job_dir / "outputs" / "up").symlink_to(job_dir, target_is_directory=True)

    auth = {"Authorization": f"token {jp_serverapp.identity_provider.token}"}
    response = run(jp_fetch("cloudpromote", "jobs", JOB_ID, "outputs", "deep", "fine.txt"))
    assert response.body == b"fine"
    code, listing = run(call(jp_fetch, "GET", "jobs", JOB_ID, "outputs"))
    assert [o["path"] for o in listing["outputs"]] == ["deep/fine.txt"]
    for path, status in (
        ("..%2Fcontext%2Fjob.py", 403),
        ("deep%2F..%2F..%2Fcontext%2Fjob.py", 403),
        ("%2E%2E/context/job.py", 403),
        ("escape", 403),
        ("up/context/job.py", 403),
        ("deep", 404),
        ("nothing.txt", 404),
    ):
        # The URL exactly as written (jp_fetch would escape the '%' again).
        url = _url(jp_serverapp, jp_base_url, f"cloudpromote/jobs/{JOB_ID}/outputs/{path}")
        response = run(raw_fetch(url, "GET", auth))
        assert response.code == status, (path, response.code, response.body)
        assert b"secret" not in response.body and b"code" not in response.body
    code, reply = run(call(jp_fetch, "GET", "jobs", params={"notebook": "../x.ipynb"}))
    assert code == 403 and reply["field"] == "notebook"


def test_a_symlinked_outputs_folder_is_refused(
    jp_fetch: Any, run: Run, service: CloudPromoteService, tmp_path: Path
) -> None:
    record = insert_job(service, JOB_ID)
    job_dir = Path(record.job_dir)
    job_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("secret")
    (job_dir / "outputs").symlink_to(elsewhere, target_is_directory=True)
    response = run(jp_fetch(f"cloudpromote/jobs/{JOB_ID}/outputs/secret.txt", raise_error=False))
    assert response.code == 403 and b"symbolic link" in response.body
    code, _ = run(call(jp_fetch, "GET", "jobs", JOB_ID, "outputs"))
    assert code == 403


def test_job_env_values_and_ca_files_are_never_served(
    jp_fetch: Any, run: Run, service: CloudPromoteService
) -> None:
    record = insert_job(service, JOB_ID)
    job_dir = Path(record.job_dir)
    (job_dir / "context").mkdir(parents=True)
    (job_dir / "context" / "cloudpromote-pip.conf").write_text("index-url = https://user:pw@x")
    (job_dir / "submit-env.json").write_text(json.dumps({"API_KEY": "s3cr3t"}))
    os.chmod(job_dir / "submit-env.json", 0o600)
    code, data = run(call(jp_fetch, "GET", "jobs", JOB_ID))
    assert code == 200
    text = json.dumps(data)
    assert "s3cr3t" not in text and "user:pw" not in text
    assert not re.search(r"pip\.conf", text)
