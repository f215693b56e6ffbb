"""Resource values as users type them: checked before anything is submitted."""

from __future__ import annotations

import pytest

from jupyter_cloudpromote.errors import CloudPromoteError, ConfigError
from jupyter_cloudpromote.models import Resources
from jupyter_cloudpromote.resources import (
    parse_duration_seconds,
    parse_memory_bytes,
    validate_resources,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("1:30:00", 5400),
        ("01:30:00", 5400),
        ("10:00", 600),
        (" 45S ", 45),
    ],
)
def test_parse_duration_seconds_accepts_the_documented_forms(text: str, seconds: float) -> None:
    assert parse_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "ten minutes", "1:2:3:4", "5x", "1h-30m", "0s"])
def test_parse_duration_seconds_rejects_others_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration_seconds(text)
    assert "time limit" in caught.value.message
    assert caught.value.fix


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * 1024**2),
        ("4G", 4 * 1024**3),
        ("4GiB", 4 * 1024**3),
        ("1.5g", int(1.5 * 1024**3)),
        ("1024", 1024),
    ],
)
def test_parse_memory_accepts_common_forms(text: str, size: int) -> None:
    assert parse_memory_bytes(text) == size


@pytest.mark.parametrize("text", ["", "lots", "0", "-1G", "4X", "4 G B"])
def test_parse_memory_rejects_others_with_an_example(text: str) -> None:
    with pytest.raises(CloudPromoteError, match="512M"):
        parse_memory_bytes(text)


def test_validate_resources_names_the_bad_value() -> None:
    with pytest.raises(CloudPromoteError, match="--cpus"):
        validate_resources(Resources(cpus=0))
    with pytest.raises(CloudPromoteError, match="--gpus"):
        validate_resources(Resources(gpus=-1))
    with pytest.raises(ConfigError, match="time limit"):
        validate_resources(Resources(time_limit="soon"))
    ok = Resources(cpus=2, memory="1G", gpus=1, time_limit="1h")
    assert validate_resources(ok) is ok
