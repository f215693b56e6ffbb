"""Pushing job images to where a remote backend can pull them: ECR, or any named registry.

The push goes through the Docker engine (docker SDK) that built the image. For ECR the
repository is created when missing and a short-lived login comes from ECR's own API
(GetAuthorizationToken), used for this push only: it is never written to disk, to the
engine's config or to a log. Other registries use the engine's existing login
(`docker login`), or none.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from .errors import BackendError, ConfigError
from .package import IMAGE_REFERENCE_RE

Progress = Callable[[str], None]
_REGISTRY_PREFIX_RE = re.compile(
    r"^(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
    r"[A-Za-z0-9])?)*)(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
NO_PUSH = frozenset({"", "none", "local"})


def _quiet(_line: str) -> None:
    pass


@dataclass(frozen=True)
class RegistryLogin:
    """A registry login for one push. The password never appears in repr or logs."""

    registry: str  # host[:port], no scheme
    username: str
    password: str = field(repr=False)

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def registry_host(reference: str) -> str | None:
    """The registry host of an image reference, or None for a Docker Hub / local name."""
    first, sep, _rest = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def is_pushed_reference(image: str) -> bool:
    """True when the image name already points into a registry (host[:port]/...)."""
    return registry_host(image) is not None


# --- ECR ----------------------------------------------------------------------------------


def ensure_ecr_repository(ecr: Any, name: str, options: dict[str, Any]) -> str:
    """The repository's URI, creating the repository (scan on push) when it is missing."""
    from .aws import ecr_repository_name, translate_error

    name = ecr_repository_name(name)
    try:
        found = ecr.describe_repositories(repositoryNames=[name])["repositories"]
        return str(found[0]["repositoryUri"])
    except ecr.exceptions.RepositoryNotFoundException:
        pass
    except Exception as exc:
        raise translate_error(
            exc, f"look up the ECR repository {name}", service="ecr", options=options
        ) from exc
    try:
        created = ecr.create_repository(
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
            tags=[{"Key": "created-by", "Value": "jupyter-cloudpromote"}],
        )
    except ecr.exceptions.RepositoryAlreadyExistsException:  # created meanwhile: fine
        found = ecr.describe_repositories(repositoryNames=[name])["repositories"]
        return str(found[0]["repositoryUri"])
    except Exception as exc:
        raise translate_error(
            exc, f"create the ECR repository {name}", service="ecr", options=options
        ) from exc
    return str(created["repository"]["repositoryUri"])


def ecr_login(ecr: Any, options: dict[str, Any]) -> RegistryLogin:
    """A login for the account's ECR registry from GetAuthorizationToken (valid ~12 h)."""
    from .aws import translate_error

    try:
        data = ecr.get_authorization_token()["authorizationData"][0]
    except Exception as exc:
        raise translate_error(
            exc, "get an ECR login token", service="ecr", options=options
        ) from exc
    decoded = base64.b64decode(data["authorizationToken"]).decode("utf-8")
    username, _, password = decoded.partition(":")
    endpoint = str(data.get("proxyEndpoint", ""))
    host = re.sub(r"^https?://", "", endpoint).rstrip("/")
    return RegistryLogin(registry=host, username=username, password=password)


# --- pushing -----------------------------------------------------------------------------


def push_image(
    client: docker.DockerClient,
    local_tag: str,
    repository: str,
    *,
    login: RegistryLogin | None = None,
    progress: Progress = _quiet,
) -> str:
    """Tag `local_tag` as `repository`:<same tag> and push it; return the pushed reference."""
    _name, _, version = local_tag.rpartition(":")
    if not version or "/" in version:
        version = "latest"
    remote = f"{repository}:{version}"
    if not IMAGE_REFERENCE_RE.match(remote):
        raise ConfigError(f"{remote!r} is not a valid image reference to push to.", "")
    try:
        client.images.get(local_tag).tag(repository, tag=version)
    except docker.errors.ImageNotFound as exc:
        raise BackendError(
            f"The image {local_tag} is not on this Docker engine, so it cannot be pushed.",
            "Build it first (promote again).",
        ) from exc
    progress(f"pushing {remote}")
    secrets = [login.password] if login else []
    last = ""
    try:
        stream = client.api.push(
            repository,
            tag=version,
            stream=True,
            decode=True,
            auth_config=login.auth_config() if login else None,
        )
        for chunk in stream:
            if "error" in chunk:
                raise BackendError(
                    f"Pushing {remote} failed: {_scrub(str(chunk['error']), secrets)}",
                    "Check that the registry is reachable and that you may push to it "
                    "(for ECR: ecr:InitiateLayerUpload and friends; elsewhere `docker login`).",
                )
            status = str(chunk.get("status", ""))
            line = f"{chunk['id']}: {status}" if "id" in chunk else status
            if line and line != last and not chunk.get("progressDetail"):
                progress(_scrub(line, secrets))
                last = line
    except docker.errors.APIError as exc:
        raise BackendError(
            f"Pushing {remote} failed: {_scrub(str(exc.explanation or exc), secrets)}",
            "Check that the registry is reachable and that you may push to it.",
        ) from exc
    return remote


def _scrub(text: str, secrets: list[str]) -> str:
    from .aws import redact

    return redact(text, secrets)


def push_for_backend(
    local_tag: str,
    options: dict[str, Any],
    *,
    client: docker.DockerClient | None = None,
    progress: Progress = _quiet,
) -> str:
    """Make the image pullable by the backend, per the profile's `registry` setting.

    - "ecr" (default for AWS backends): the account's ECR in the profile's region.
    - "none": use the image name as it is (the compute can already see this engine's images,
      e.g. an emulator on this machine, or the image was pushed by c.CloudPromote.registry).
    - anything else: a registry prefix such as "registry.example.com/team".
    An image that already names a registry host is used as it is.
    """
    target = str(options.get("registry") or "ecr").strip()
    if target.lower() in NO_PUSH or is_pushed_reference(local_tag):
        return local_tag
    engine = client or _engine()
    repository_path = local_tag.rpartition(":")[0]
    if target.lower() == "ecr":
        from .aws import client_for

        ecr = client_for("ecr", options)
        prefix = str(options.get("ecr_repository_prefix") or "").strip("/")
        name = f"{prefix}/{repository_path}" if prefix else repository_path
        uri = ensure_ecr_repository(ecr, name, options)
        login = ecr_login(ecr, options)
        return push_image(engine, local_tag, uri, login=login, progress=progress)
    if not _REGISTRY_PREFIX_RE.match(target.rstrip("/")):
        raise ConfigError(
            f"The setting registry={target!r} is not 'ecr', 'none' or a registry prefix.",
            "Use e.g. registry=ecr, registry=none or registry=registry.example.com/team.",
        )
    return push_image(
        engine, local_tag, f"{target.rstrip('/')}/{repository_path}", progress=progress
    )


def _engine() -> docker.DockerClient:
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise BackendError(
            f"Cannot reach the Docker engine to push the job image ({exc}).",
            "Start Docker and try again.",
        ) from exc
