"""Request validation: JSON bodies and query strings in, plain dataclasses out.

pydantic is not among jupyter_server's dependencies, so this is a small hand-written layer.
Every refusal is a `BodyError` naming the field and what was expected; the handlers answer
it with a 400. Unknown fields are refused too, so a typo ("paramters") is not silently lost.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..models import JobState, PromotionOptions, Resources

MAX_BODY_BYTES = 1024 * 1024
MAX_STRING = 4096
MAX_ITEMS = 256
MAX_LOG_CHUNK = 8 * 1024 * 1024
DEFAULT_LOG_CHUNK = 1024 * 1024
MAX_PAGE = 500
MAX_REQUIREMENTS = 1024

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_NAME = _NAME
_OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_BACKEND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A Docker image reference: registry/name:tag or @digest; nothing a shell would act on.
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
_KERNEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
JOB_ID = re.compile(r"^[0-9a-fA-F]{4,64}$")


class BodyError(ValueError):
    """A request field is missing or has the wrong type or value."""

    def __init__(self, field: str, expected: str, got: Any = None, *, has_got: bool = False):
        self.field = field
        self.expected = expected
        detail = f" (got {_describe(got)})" if has_got else ""
        self.message = f"'{field}' must be {expected}{detail}."
        super().__init__(self.message)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if len(value) > 40 else f"{value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_BODY_BYTES:
        raise BodyError("body", f"at most {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raise BodyError("body", "a JSON object")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BodyError("body", f"a JSON object; it is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BodyError("body", "a JSON object", data, has_got=True)
    return data


def _refuse_unknown(data: dict[str, Any], known: set[str], where: str = "") -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        first = unknown[0] or "(empty name)"
        name = f"{where}.{first}" if where else first
        raise BodyError(name, f"one of the known fields ({', '.join(sorted(known))})")


def _string(
    data: dict[str, Any],
    key: str,
    *,
    required: bool = False,
    pattern: re.Pattern[str] | None = None,
    what: str = "a string",
    where: str = "",
) -> str | None:
    name = f"{where}.{key}" if where else key
    if key not in data or data[key] is None:
        if required:
            raise BodyError(name, what)
        return None
    value = data[key]
    if not isinstance(value, str):
        raise BodyError(name, what, value, has_got=True)
    if len(value) > MAX_STRING or "\x00" in value:
        raise BodyError(name, f"{what}, at most {MAX_STRING} characters and no NUL character")
    if pattern is not None and not pattern.match(value):
        raise BodyError(name, what, value, has_got=True)
    return value


def _bool(data: dict[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BodyError(key, "true or false", value, has_got=True)
    return value


def _string_map(
    data: dict[str, Any], key: str, name_pattern: re.Pattern[str], what_name: str
) -> dict[str, str]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BodyError(key, f"an object of {what_name} to strings", value, has_got=True)
    if len(value) > MAX_ITEMS:
        raise BodyError(key, f"an object with at most {MAX_ITEMS} entries")
    result: dict[str, str] = {}
    for name, item in value.items():
        if not name_pattern.match(name):
            raise BodyError(f"{key}.{name}" if name else key, f"keyed by {what_name}")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise BodyError(f"{key}.{name}", "a string", item, has_got=True)
        text = item if isinstance(item, str) else str(item)
        if len(text) > MAX_STRING or "\x00" in text:
            raise BodyError(f"{key}.{name}", f"at most {MAX_STRING} characters, no NUL")
        result[name] = text
    return result


def parameter_text(value: Any) -> str:
    """A JSON parameter value as the raw text the pipeline types (the CLI's NAME=VALUE).

    Strings pass as typed; other values as JSON text, which convert's coercion reads back
    by the type of the parameters cell's default (true/false, numbers, lists, objects).
    """
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _json_literal(value: Any, name: str, depth: int = 0) -> Any:
    if depth > 20:
        raise BodyError(name, "nested at most 20 levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, str) and (len(value) > MAX_STRING or "\x00" in value):
            raise BodyError(name, f"at most {MAX_STRING} characters, no NUL")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            raise BodyError(name, "a number within 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BodyError(name, "a finite number")
        return value
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise BodyError(name, f"a list of at most {MAX_ITEMS} items")
        return [_json_literal(v, f"{name}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise BodyError(name, f"an object of at most {MAX_ITEMS} entries")
        return {str(k): _json_literal(v, f"{name}.{k}", depth + 1) for k, v in value.items()}
    raise BodyError(name, "a JSON value", value, has_got=True)


def _parameters(data: dict[str, Any]) -> dict[str, str]:
    value = data.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BodyError("parameters", "an object of parameter names to values", value, has_got=True)
    if len(value) > MAX_ITEMS:
        raise BodyError("parameters", f"an object with at most {MAX_ITEMS} entries")
    result = {}
    for name, item in value.items():
        if not _NAME.match(name):
            raise BodyError(f"parameters.{name}" if name else "parameters", "keyed by Python names")
        result[name] = parameter_text(_json_literal(item, f"parameters.{name}"))
    return result


def _number(value: Any, name: str, *, integer: bool = False, minimum: float = 0) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise BodyError(name, "an integer" if integer else "a number", value, has_got=True)
    if isinstance(value, float) and not math.isfinite(value):
        raise BodyError(name, "a finite number", value, has_got=True)
    if value < minimum or value > 1_000_000:
        raise BodyError(name, f"between {minimum} and 1000000", value, has_got=True)
    return value


def _resources(data: dict[str, Any]) -> Resources:
    value = data.get("resources")
    if value is None:
        return Resources()
    if not isinstance(value, dict):
        raise BodyError(
            "resources", "an object {cpus, memory, gpus, time_limit}", value, has_got=True
        )
    _refuse_unknown(value, {"cpus", "memory", "gpus", "time_limit"}, "resources")
    cpus = value.get("cpus")
    if cpus is not None:
        cpus = float(_number(cpus, "resources.cpus"))
        if cpus <= 0:
            raise BodyError("resources.cpus", "above 0", cpus, has_got=True)
    gpus = value.get("gpus")
    gpus = 0 if gpus is None else int(_number(gpus, "resources.gpus", integer=True))
    memory = _string(value, "memory", what="a size like '4G' or '512M'", where="resources")
    time_limit = _string(
        value, "time_limit", what="a duration like '30m' or '2h'", where="resources"
    )
    return Resources(cpus=cpus, memory=memory, gpus=gpus, time_limit=time_limit)


def _includes(data: dict[str, Any]) -> list[str]:
    value = data.get("include")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise BodyError("include", f"a list of at most {MAX_ITEMS} paths", value, has_got=True)
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item or len(item) > MAX_STRING or "\x00" in item:
            raise BodyError(f"include[{index}]", "a non-empty path string", item, has_got=True)
        result.append(item)
    return result


def _requirement_lines(data: dict[str, Any]) -> list[str] | None:
    """Edited requirement lines: absent or null keeps the resolved ones; [] means none.

    Only the shape is checked here; the pipeline parses each line (a bad one is a 400
    naming the line and the fix).
    """
    value = data.get("requirements")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_REQUIREMENTS:
        raise BodyError(
            "requirements",
            f"a list of at most {MAX_REQUIREMENTS} requirement strings, or null",
            value,
            has_got=True,
        )
    lines = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or len(item) > MAX_STRING or "\x00" in item:
            raise BodyError(
                f"requirements[{index}]",
                f"a requirement string of at most {MAX_STRING} characters",
                item,
                has_got=True,
            )
        if "\n" in item or "\r" in item:
            raise BodyError(f"requirements[{index}]", "a single line (one requirement per item)")
        lines.append(item)
    return lines


_PROMOTION_FIELDS = {
    "path",
    "backend",
    "options",
    "parameters",
    "resources",
    "include",
    "base_image",
    "kernel",
    "requirements",
}


@dataclass
class PromotionBody:
    """A validated preview or submit request: the notebook's API path and the options."""

    path: str
    options: PromotionOptions = field(default_factory=PromotionOptions)


def _promotion(data: dict[str, Any], known: set[str]) -> PromotionBody:
    _refuse_unknown(data, known)
    path = _string(
        data, "path", required=True, what="the notebook's path relative to the server root"
    )
    assert path is not None
    options = PromotionOptions(
        backend=_string(data, "backend", pattern=_BACKEND, what="a backend profile name"),
        options=_string_map(data, "options", _OPTION_NAME, "setting names"),
        parameters=_parameters(data),
        resources=_resources(data),
        include=_includes(data),
        env=_string_map(data, "env", _ENV_NAME, "environment variable names"),
        base_image=_string(data, "base_image", pattern=_IMAGE, what="an image reference"),
        kernel=_string(data, "kernel", pattern=_KERNEL, what="a kernel name"),
        force=_bool(data, "force"),
        requirements=_requirement_lines(data),
    )
    return PromotionBody(path=path, options=options)


def preview_body(data: dict[str, Any]) -> PromotionBody:
    return _promotion(data, _PROMOTION_FIELDS)


def submit_body(data: dict[str, Any]) -> PromotionBody:
    return _promotion(data, _PROMOTION_FIELDS | {"env", "force"})


# --- query strings -------------------------------------------------------------------------


@dataclass
class ListQuery:
    states: list[JobState] | None
    backend: str | None
    notebook: str | None  # API path
    limit: int
    offset: int
    newest_first: bool


def _one(args: dict[str, list[bytes]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(name, "UTF-8 text") from None


def _int_arg(args: dict[str, list[bytes]], name: str, default: int, low: int, high: int) -> int:
    text = _one(args, name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"\d{1,12}", text):
        raise BodyError(name, f"a whole number from {low} to {high}", text, has_got=True)
    value = int(text)
    if not low <= value <= high:
        raise BodyError(name, f"a whole number from {low} to {high}", text, has_got=True)
    return value


def list_query(args: dict[str, list[bytes]]) -> ListQuery:
    known = {"status", "backend", "notebook", "limit", "offset", "sort"}
    ignored = {"token", "no_track_activity", "_xsrf"}  # jupyter_server's own parameters
    unknown = sorted(k for k in args if k not in known | ignored)
    if unknown:
        raise BodyError(unknown[0], f"one of the query parameters {', '.join(sorted(known))}")
    states: list[JobState] = []
    for raw in args.get("status", []):
        for part in raw.decode("utf-8", errors="replace").split(","):
            part = part.strip()
            if not part:
                continue
            try:
                states.append(JobState(part))
            except ValueError:
                raise BodyError(
                    "status", f"one of {', '.join(s.value for s in JobState)}", part, has_got=True
                ) from None
    backend = _one(args, "backend") or None
    if backend is not None and not _BACKEND.match(backend):
        raise BodyError("backend", "a backend profile name", backend, has_got=True)
    sort = _one(args, "sort") or "created-desc"
    if sort not in ("created-desc", "created-asc"):
        raise BodyError("sort", "'created-desc' or 'created-asc'", sort, has_got=True)
    return ListQuery(
        states=states or None,
        backend=backend,
        notebook=_one(args, "notebook") or None,
        limit=_int_arg(args, "limit", 50, 1, MAX_PAGE),
        offset=_int_arg(args, "offset", 0, 0, 10**9),
        newest_first=sort == "created-desc",
    )


@dataclass
class LogQuery:
    phase: str
    offset: int
    limit: int


def log_query(args: dict[str, list[bytes]]) -> LogQuery:
    phase = _one(args, "phase") or "run"
    if phase not in ("build", "run"):
        raise BodyError("phase", "'build' or 'run'", phase, has_got=True)
    return LogQuery(
        phase=phase,
        offset=_int_arg(args, "offset", 0, 0, 2**53),
        limit=_int_arg(args, "limit", DEFAULT_LOG_CHUNK, 1, MAX_LOG_CHUNK),
    )


def stream_phases(args: dict[str, list[bytes]]) -> list[str]:
    text = _one(args, "phase") or "build,run"
    phases = [p.strip() for p in text.split(",") if p.strip()]
    if not phases or any(p not in ("build", "run") for p in phases):
        raise BodyError("phase", "'build', 'run' or 'build,run'", text, has_got=True)
    return sorted(set(phases), key=["build", "run"].index)


def check_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise BodyError("job id", "4 to 64 hexadecimal characters", job_id, has_got=True)
    return job_id.lower()
