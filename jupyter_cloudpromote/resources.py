"""Parsing of the resource values users type (--memory 4G, --time 2h), checked up front."""

from __future__ import annotations

import re

from .errors import ConfigError
from .models import Resources

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hr": 3600,
    "d": 86400,
    "day": 86400,
}


def parse_memory_bytes(text: str) -> int:
    """'4G', '512M', '4GiB', '1.5g', '1048576' (bytes) -> bytes. Units are binary (1024)."""
    match = _MEMORY.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"Memory {text!r} is not a size.", "Write it like 512M, 4G or 16GiB.")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_duration_seconds(text: str) -> float:
    """Seconds in a time limit: "30s", "10m", "2h", "1d", "1h30m", "1:30:00" or "10:00" (M:S).

    Bare numbers are refused: schedulers disagree on their unit, so users must say it.
    """
    value = str(text).strip().lower()
    bad = ConfigError(
        f"Invalid time limit {text!r}.",
        "Write it like 30s, 10m, 2h, 1h30m or 1:30:00 (hours:minutes:seconds).",
    )
    if not value:
        raise bad
    seconds = 0.0
    if ":" in value:
        parts = value.split(":")
        if len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise bad
        for part in parts:
            seconds = seconds * 60 + int(part)
    else:
        compact = value.replace(" ", "")
        matches = list(_DURATION_PART.finditer(compact))
        if not matches or "".join(m.group(0) for m in matches) != compact:
            raise bad
        seconds = sum(float(m.group(1)) * _UNIT_SECONDS[m.group(2)] for m in matches)
    if seconds <= 0:
        raise ConfigError(f"The time limit {text!r} is zero.", "Give a positive time limit.")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form of a duration: 90 -> '90s', 600 -> '10m', 7200 -> '2h'."""
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def validate_resources(resources: Resources) -> Resources:
    """Raise CloudPromoteError naming the bad value; returns the resources unchanged."""
    if resources.cpus is not None and not resources.cpus > 0:
        raise ConfigError(f"--cpus {resources.cpus} must be above 0.", "Try --cpus 2.")
    if resources.gpus < 0:
        raise ConfigError(f"--gpus {resources.gpus} cannot be negative.", "Try --gpus 1.")
    if resources.memory is not None:
        parse_memory_bytes(resources.memory)
    if resources.time_limit is not None:
        parse_duration_seconds(resources.time_limit)
    return resources
