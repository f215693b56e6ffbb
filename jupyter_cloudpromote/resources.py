"""Parsing of the resource values users type (--memory 4G, --time 2h), checked up front."""

from __future__ import annotations

import re

from .errors import CloudPromoteError
from .models import Resources

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day)?s?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400}


def parse_memory_bytes(text: str) -> int:
    """'4G', '512M', '4GiB', '1.5g', '1048576' (bytes) -> bytes. Units are binary (1024)."""
    match = _MEMORY.match(text)
    if not match or float(match.group(1)) <= 0:
        raise CloudPromoteError(
            f"Memory {text!r} is not a size.", "Write it like 512M, 4G or 16GiB."
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_duration_seconds(text: str) -> int:
    """'90s', '30m', '2h', '1d', '1:30:00', '45:00' (mm:ss), '120' (minutes, as Slurm) -> s."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) in (2, 3) and all(p.isdigit() for p in parts):
            numbers = [int(p) for p in parts]
            if len(numbers) == 2:
                numbers.insert(0, 0)
            hours, minutes, seconds = numbers
            total = hours * 3600 + minutes * 60 + seconds
            if total > 0:
                return total
    else:
        match = _DURATION.match(text)
        if match:
            value = float(match.group(1))
            unit = (match.group(2) or "min").lower()
            total = int(value * _SECONDS[unit])
            if total > 0:
                return total
    raise CloudPromoteError(
        f"Time limit {text!r} is not a duration.", "Write it like 90s, 30m, 2h or 1:30:00."
    )


def format_duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def validate_resources(resources: Resources) -> Resources:
    """Raise CloudPromoteError naming the bad value; returns the resources unchanged."""
    if resources.cpus is not None and not resources.cpus > 0:
        raise CloudPromoteError(f"--cpus {resources.cpus} must be above 0.", "Try --cpus 2.")
    if resources.gpus < 0:
        raise CloudPromoteError(f"--gpus {resources.gpus} cannot be negative.", "Try --gpus 1.")
    if resources.memory is not None:
        parse_memory_bytes(resources.memory)
    if resources.time_limit is not None:
        parse_duration_seconds(resources.time_limit)
    return resources
