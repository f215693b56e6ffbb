# ruff: noqa: F811  (pytest fixtures imported from test_server_api are redefined as arguments)
"""Property tests (hypothesis): whatever a client sends, the API answers without a 500,
and the notebook files it names are byte-identical afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_jupyter.jupyter_server import *  # noqa: F403
from traitlets.config import Config

from jupyter_cloudpromote.server import schemas
from jupyter_cloudpromote.server.app import CloudPromoteService

from .conftest import make_notebook
from .test_server_api import (  # noqa: F401 - fixtures
    Run,
    call,
    digest,
    run,
    server_config,
    service,
    shared_venv_cache,
)

FIELDS = [
    "path",
    "backend",
    "options",
    "parameters",
    "resources",
    "include",
    "env",
    "base_image",
    "kernel",
    "force",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
paths = st.sampled_from(
    [
        "good.ipynb",
        "../good.ipynb",
        "/good.ipynb",
        "link.ipynb",
        "none.ipynb",
        "",
        "sub/..",
        "good.ipynb\x00",
    ]
) | st.text(max_size=20)
# Bodies shaped like real requests (known fields, wrong or right values) and arbitrary JSON.
bodies = st.one_of(
    st.fixed_dictionaries(
        {"path": paths},
        optional={
            "backend": st.sampled_from(["nowhere", "local-x", "../x"]) | json_values,
            "parameters": st.dictionaries(st.text(max_size=6), json_values, max_size=3)
            | json_values,
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "cpus": json_values,
                    "memory": st.sampled_from(["4G", "lots", "0"]) | json_values,
                    "gpus": json_values,
                    "time_limit": st.sampled_from(["2h", "never", "1:00:00"]) | json_values,
                },
            )
            | json_values,
            "include": st.lists(paths, max_size=3) | json_values,
            "env": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
            "options": st.dictionaries(st.text(max_size=6), json_values, max_size=3),
            "base_image": st.text(max_size=20) | json_values,
            "kernel": st.text(max_size=10) | json_values,
            "force": json_values,
            "extra": json_values,
        },
    ),
    json_values,
)


@pytest.fixture()
def jp_server_config(shared_venv_cache: Path) -> Config:
    return server_config(shared_venv_cache)


@pytest.fixture()
def tree(jp_root_dir: Path, tmp_path: Path) -> dict[str, Path]:
    good = make_notebook(
        jp_root_dir / "good.ipynb", [("alpha = 1\nname = 'a'", ["parameters"]), "print(alpha)"]
    )
    outside = make_notebook(tmp_path / "outside.ipynb", ["print('outside')"])
    (jp_root_dir / "link.ipynb").symlink_to(outside)
    return {"good": good, "outside": outside}


PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(body=bodies)
def test_random_request_bodies_never_give_a_500_nor_touch_notebooks(
    jp_fetch: Any, run: Run, tree: dict[str, Path], service: CloudPromoteService, body: Any
) -> None:
    before = {name: digest(path) for name, path in tree.items()}
    # Never a real submission: a body that would pass gets an unknown backend.
    submit = dict(body) if isinstance(body, dict) else body
    if isinstance(submit, dict):
        submit["backend"] = "no-such-backend"
    for verb, payload in (("preview", body), ("jobs", submit)):
        code, reply = run(call(jp_fetch, "POST", verb, body=json.dumps(payload)))
        assert code < 500, (verb, payload, reply)
        if code >= 400:
            assert isinstance(reply, dict) and reply.get("message"), reply
    assert service.manager.store.count() == 0
    assert {name: digest(path) for name, path in tree.items()} == before


notebook_json = st.fixed_dictionaries(
    {},
    optional={
        "cells": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "cell_type": st.sampled_from(["code", "markdown", "raw", "bogus"])
                    | json_values,
                    "source": st.text(max_size=40) | st.lists(st.text(max_size=10)) | json_values,
                    "metadata": st.just({}) | json_values,
                    "outputs": st.just([]) | json_values,
                    "execution_count": st.none() | json_values,
                },
            ),
            max_size=4,
        )
        | json_values,
        "metadata": st.just({"kernelspec": {"name": "python3"}}) | json_values,
        "nbformat": st.sampled_from([4, 3, 5]) | json_values,
        "nbformat_minor": st.sampled_from([0, 5]) | json_values,
    },
)
notebook_bytes = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    notebook_json.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=100).map(lambda t: t.encode("utf-8")),
)


@pytest.mark.slow  # a generated notebook that passes every check really runs (local backend)
@PROPERTY_SETTINGS
@given(content=notebook_bytes)
def test_malformed_notebooks_never_give_a_500_and_stay_byte_identical(
    jp_fetch: Any, run: Run, jp_root_dir: Path, service: CloudPromoteService, content: bytes
) -> None:
    path = jp_root_dir / "fuzz.ipynb"
    path.write_bytes(content)
    jobs_before = service.manager.store.count()
    for verb, body in (
        ("preview", {"path": "fuzz.ipynb"}),
        # A notebook that passes every check is really submitted (201), with a short limit.
        ("jobs", {"path": "fuzz.ipynb", "backend": "no-such-backend"}),
        ("jobs", {"path": "fuzz.ipynb", "resources": {"time_limit": "1s"}}),
    ):
        code, reply = run(call(jp_fetch, "POST", verb, body=body))
        assert code < 500, (verb, content, reply)
        assert code in (200, 201, 400, 404, 422), (code, reply)
        if code >= 400:
            assert reply["message"], reply
        assert path.read_bytes() == content
    # A notebook nbformat accepts may be submitted; one it refuses never creates a job.
    try:
        nbformat.validate(nbformat.reads(content.decode("utf-8"), as_version=4))
        valid = True
    except Exception:
        valid = False
    if not valid:
        assert service.manager.store.count() == jobs_before


@given(data=json_values)
@settings(max_examples=300, deadline=None)
def test_schema_layer_raises_only_body_errors(data: Any) -> None:
    """Pure validation layer: anything that is not a valid body is a BodyError, nothing else."""
    for parse in (schemas.submit_body, schemas.preview_body):
        if not isinstance(data, dict):
            with pytest.raises(schemas.BodyError):
                schemas.parse_json_object(json.dumps(data).encode())
            continue
        try:
            parse(data)
        except schemas.BodyError as exc:
            assert exc.field and exc.message.startswith(f"'{exc.field}'")


@given(raw=st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_json_body_parser_accepts_only_objects(raw: bytes) -> None:
    try:
        data = schemas.parse_json_object(raw)
    except schemas.BodyError as exc:
        assert exc.field == "body"
    else:
        assert isinstance(data, dict)
