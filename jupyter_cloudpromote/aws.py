"""Shared AWS plumbing for the AWS backends: sessions, clients, names, errors, redaction.

Credentials always come from the standard AWS chain (environment, shared config profiles,
container or instance roles), resolved by boto3 itself. This module never reads, stores or
prints a credential value; `redact` removes any that would otherwise reach a log line or a
failure reason.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from .errors import BackendError, ConfigError

INSTALL_HINT = "pip install 'jupyter-cloudpromote[aws]'"

# AWS Batch: job, job definition and queue names: 1-128 letters, digits, '-' and '_',
# starting with a letter or digit.
BATCH_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# SageMaker resource names (training jobs): the service model's pattern, 1-63 characters.
SAGEMAKER_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# ECR repository names (the service model's pattern), 2-256 characters.
ECR_REPOSITORY_RE = re.compile(
    r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"
)
# S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
ENDPOINT_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[^\s]*)?$")
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+$")

# Environment variable names that carry credentials: never passed into a job.
CREDENTIAL_ENV_NAMES = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}
)
# Access key ids have a recognisable shape; secrets and tokens are removed by value.
_ACCESS_KEY_ID_RE = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{16}\b")
_SECRET_ASSIGNMENT_RE = re.compile(
    r"(?i)(aws_secret_access_key|aws_session_token|secretaccesskey|sessiontoken|"
    r"x-amz-security-token|authorizationtoken|password)(\"?\s*[=:]\s*\"?)([^\s\"',&]+)"
)
REDACTED = "[redacted]"

_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedException",
        "AuthorizationError",
        "Forbidden",
        "403",
    }
)
_BAD_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
    }
)
_NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFound",
        "ResourceNotFoundException",
        "NoSuchBucket",
        "NoSuchKey",
        "RepositoryNotFoundException",
        "404",
    }
)
_THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"}
)


# --- options -----------------------------------------------------------------------------


def option_text(options: dict[str, Any], name: str) -> str:
    value = options.get(name)
    return "" if value is None else str(value).strip()


def require_option(options: dict[str, Any], name: str, kind: str, what: str, example: str) -> str:
    """The profile setting `name`, or a ConfigError saying what it is and how to set it."""
    value = option_text(options, name)
    if not value:
        raise ConfigError(
            f"The {kind} backend needs the setting {name!r}: {what}.",
            f"Set it in the profile (c.CloudPromote.profiles = {{'my-{kind}': {{'kind': "
            f"'{kind}', '{name}': '{example}'}}}}) or per run with --option {name}={example}.",
        )
    return value


def validate_common_options(options: dict[str, Any], kind: str) -> None:
    """Check `region`, `endpoint_url`, `bucket` and `prefix` when given."""
    region = option_text(options, "region")
    if region and not REGION_RE.match(region):
        raise ConfigError(
            f"The {kind} setting 'region' has an invalid value {region!r}.",
            "Use an AWS region name such as us-east-1 or eu-west-2.",
        )
    endpoint = option_text(options, "endpoint_url")
    if endpoint and not ENDPOINT_RE.match(endpoint):
        raise ConfigError(
            f"The {kind} setting 'endpoint_url' has an invalid value {endpoint!r}.",
            "Use an http(s) URL, e.g. https://batch.eu-west-1.amazonaws.com or a VPC endpoint.",
        )
    bucket = option_text(options, "bucket")
    if bucket and not BUCKET_RE.match(bucket):
        raise ConfigError(
            f"The {kind} setting 'bucket' has an invalid value {bucket!r}.",
            "Give the bucket's name only (3-63 lowercase letters, digits, '.' and '-'), "
            "without s3://; use 'prefix' for a folder inside it.",
        )
    prefix = option_text(options, "prefix")
    if prefix and not re.match(r"^[A-Za-z0-9!_.*'()/-]+$", prefix):
        raise ConfigError(
            f"The {kind} setting 'prefix' has an invalid value {prefix!r}.",
            "Use letters, digits, '/', '-', '_' and '.' only.",
        )


# --- sessions and clients ---------------------------------------------------------------


def session_for(options: dict[str, Any]) -> boto3.session.Session:
    """A boto3 session on the standard credential chain, in the configured region.

    `aws_profile` names a profile of ~/.aws/config; without it boto3's own order applies
    (environment, AWS_PROFILE, shared files, container role, instance role).
    """
    profile = option_text(options, "aws_profile") or None
    region = option_text(options, "region") or None
    try:
        return boto3.session.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigError(
            f"The AWS profile {profile!r} is not in your AWS config files.",
            "Fix the 'aws_profile' setting, or run `aws configure --profile NAME`.",
        ) from exc


def region_of(options: dict[str, Any], session: boto3.session.Session | None = None) -> str:
    region = option_text(options, "region") or (session or session_for(options)).region_name
    if not region:
        raise ConfigError(
            "No AWS region is configured.",
            "Set the profile's 'region' (or --option region=us-east-1), or AWS_DEFAULT_REGION.",
        )
    return str(region)


def endpoint_for(options: dict[str, Any], service: str) -> str | None:
    """`<service>_endpoint_url` (e.g. s3_endpoint_url) wins over the shared `endpoint_url`."""
    specific = option_text(options, f"{service}_endpoint_url")
    return specific or option_text(options, "endpoint_url") or None


def client_for(service: str, options: dict[str, Any], *, attempts: int = 5) -> Any:
    """A boto3 client with the profile's region and endpoint (VPC endpoint or emulator)."""
    session = session_for(options)
    config = BotoConfig(
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="jupyter-cloudpromote",
    )
    return session.client(
        service,
        region_name=region_of(options, session),
        endpoint_url=endpoint_for(options, service),
        config=config,
    )


def storage_options(options: dict[str, Any]) -> dict[str, Any]:
    """fsspec/s3fs options matching the profile: same region, endpoint and credential chain."""
    client_kwargs: dict[str, Any] = {"region_name": region_of(options)}
    endpoint = endpoint_for(options, "s3")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    result: dict[str, Any] = {"client_kwargs": client_kwargs}
    profile = option_text(options, "aws_profile")
    if profile:
        result["profile"] = profile
    return result


# --- names ------------------------------------------------------------------------------


def _short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def batch_name(text: str, max_length: int = 128) -> str:
    """A valid AWS Batch name (job, job definition): other characters become '-'.

    When characters had to be replaced or the name shortened, a short hash of the original
    keeps two different inputs from colliding.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    if not cleaned:
        cleaned = "job"
    if cleaned != text or len(cleaned) > max_length:
        suffix = _short_hash(text)
        cleaned = f"{cleaned[: max_length - len(suffix) - 1].rstrip('-_')}-{suffix}"
    if not cleaned[0].isalnum():
        cleaned = f"j{cleaned}"[:max_length]
    return cleaned


def sagemaker_name(text: str, max_length: int = 63) -> str:
    """A valid SageMaker resource name: letters, digits and single inner '-', up to 63."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")
    if not cleaned:
        cleaned = "job"
    if cleaned != text or len(cleaned) > max_length:
        suffix = _short_hash(text)
        cleaned = f"{cleaned[: max_length - len(suffix) - 1].rstrip('-')}-{suffix}"
    return cleaned


def ecr_repository_name(text: str) -> str:
    """A valid ECR repository name: lowercase path components joined by '/'."""
    parts = []
    for part in text.lower().split("/"):
        part = re.sub(r"[^a-z0-9._-]+", "-", part)
        part = re.sub(r"[._-]*([._]|__|-+)[._-]*", lambda m: m.group(1), part)
        part = part.strip("._-")
        if part:
            parts.append(part)
    name = "/".join(parts) or "cloudpromote"
    if len(name) < 2:
        name = f"{name}-repo"
    return name[:256].rstrip("/._-")


def s3_join(bucket: str, *parts: str) -> str:
    """s3://bucket/a/b/ from parts, with single slashes; a trailing slash marks a folder."""
    cleaned = [p.strip("/") for p in parts if p and p.strip("/")]
    return "s3://" + "/".join([bucket, *cleaned]) + "/"


def stage_job_input(options: dict[str, Any], bucket: str, job_root: list[str]) -> str:
    """The `input` setting made readable by the job under s3://bucket/<job root>/inputs/
    (uploaded when local, passed through when already remote); "" when there is none."""
    source = option_text(options, "input")
    if not source:
        return ""
    from .staging import stage_input  # fsspec and s3fs load only for jobs with an input

    destination = s3_join(bucket, *job_root, "inputs")
    return stage_input(source, destination, storage_options(options)).uri


# --- errors -----------------------------------------------------------------------------


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def translate_error(
    exc: BaseException,
    action: str,
    *,
    service: str,
    options: dict[str, Any],
    missing: str = "",
    missing_fix: str = "",
) -> BackendError:
    """A BackendError with a clear reason for an AWS SDK failure during `action`.

    `missing` names what a not-found answer means here (e.g. "job queue 'q'"), with
    `missing_fix` telling what to do about it.
    """
    region = option_text(options, "region") or "the configured region"
    endpoint = endpoint_for(options, service)
    where = f"{region}" + (f" at {endpoint}" if endpoint else "")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return BackendError(
            f"No AWS credentials were found while trying to {action}.",
            "Provide them the standard AWS way: `aws configure` (or `aws sso login`), "
            "AWS_PROFILE or the 'aws_profile' setting, environment variables, or an "
            "instance/container role. cloudpromote never stores them.",
        )
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return BackendError(
            f"No AWS region is configured (while trying to {action}).",
            "Set the profile's 'region' or AWS_DEFAULT_REGION.",
        )
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError
    ):
        return BackendError(
            f"Cannot reach AWS {service} in {where} to {action}: {redact(str(exc))}",
            "Check the network, the region and the 'endpoint_url' setting.",
        )
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return BackendError(
            f"The {service} request to {action} was refused before sending: {redact(str(exc))}",
            "This is a bug in cloudpromote's AWS backend; please report it.",
        )
    if not isinstance(exc, botocore.exceptions.ClientError):
        return BackendError(f"AWS {service} failed to {action}: {redact(str(exc))}", "")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = redact(str(error.get("Message", "")) or str(exc))
    if "<html" in message.lower():  # an HTML error page, e.g. an emulator's HTTP 500
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", code)
        message = f"the endpoint answered with an HTTP {status} error page"
    operation = getattr(exc, "operation_name", "") or ""
    api = f"{service}:{operation}" if operation else service
    if code in _ACCESS_DENIED_CODES:
        return BackendError(
            f"AWS denied access to {api} (to {action}) in {where}: {message}",
            f"Grant the identity you run as permission for {api} (check with "
            "`aws sts get-caller-identity`), or use a profile that has it.",
        )
    if code in _BAD_CREDENTIAL_CODES:
        return BackendError(
            f"AWS did not accept your credentials for {api} (to {action}): {code}: {message}",
            "Your credentials are invalid or expired: refresh them (`aws sso login`, new "
            "keys, or the right AWS_PROFILE), and check the region and endpoint.",
        )
    lowered = message.lower()
    if missing and (
        code in _NOT_FOUND_CODES or "does not exist" in lowered or "not found" in lowered
    ):
        return BackendError(
            f"AWS {service} says the {missing} does not exist in {where} (while trying to "
            f"{action}): {message}",
            missing_fix or "Create it first, or fix the profile's setting.",
        )
    if code in _THROTTLING_CODES:
        return BackendError(
            f"AWS throttled the request to {action} ({code}): {message}",
            "Wait a moment and try again; raise the account's API limits if it persists.",
        )
    if code in ("ResourceLimitExceeded", "LimitExceededException", "ServiceQuotaExceededException"):
        return BackendError(
            f"An AWS account limit stopped the request to {action}: {message}",
            "Request a quota increase in the Service Quotas console, or ask for less.",
        )
    return BackendError(f"AWS {api} failed to {action}: {code}: {message}".rstrip(": "), "")


# --- redaction --------------------------------------------------------------------------


def credential_values(options: dict[str, Any] | None = None) -> list[str]:
    """The current credentials' secret parts, for redaction only (never stored)."""
    try:
        credentials = session_for(options or {}).get_credentials()
    except Exception:  # no credentials, broken config: nothing to redact
        return []
    if credentials is None:
        return []
    frozen = credentials.get_frozen_credentials()
    return [v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Remove credential values from text meant for logs or failure reasons."""
    for secret in sorted(secrets or [], key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _ACCESS_KEY_ID_RE.sub(REDACTED, text)
    return _SECRET_ASSIGNMENT_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def check_job_env(env: dict[str, str], kind: str) -> None:
    """Refuse AWS credentials among a job's environment variables."""
    found = sorted(name for name in env if name.upper() in CREDENTIAL_ENV_NAMES)
    if found:
        raise ConfigError(
            f"The {kind} backend does not pass AWS credentials into jobs ({', '.join(found)}).",
            "Give the job a role instead (the profile's job role setting); its containers "
            "then get short-lived credentials from AWS itself.",
        )
