"""Cost estimates for the guide: instance price per hour x time limit, from a dated table.

The tables below hold on-demand list prices for Linux in us-east-1 for a small set of common
instance types, as of PRICE_TABLE_DATE. They were written down without access to AWS's price
lists (the machines this was built on reach no such service) and are not verified against
them: PRICE_TABLE_VERIFIED says so, and the figure shown to users says so too. Prices also
change, differ by region, and exclude storage, data transfer and discounts (spot, savings
plans), so every figure is labelled an estimate with the table's date. Nothing here calls a
pricing API: the guide must work offline and instantly.

The same table maps resources to an instance type for SageMaker (which bills per instance):
the cheapest listed type with at least the requested vCPUs, memory and GPUs. AWS Batch picks
instances itself from its compute environment; its estimate uses the same rule on EC2 prices,
which is a fair guide to what one job occupies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .models import Resources
from .resources import parse_duration_seconds, parse_memory_bytes

PRICE_TABLE_DATE = "2025-06-01"
PRICE_TABLE_REGION = "us-east-1"
PRICE_TABLE_VERIFIED = False  # set True once checked against AWS's current price lists
PRICE_TABLE_SOURCE = (
    "approximate AWS on-demand list prices (Amazon EC2 Linux and Amazon SageMaker Training), "
    f"region {PRICE_TABLE_REGION}, as of {PRICE_TABLE_DATE}, not verified against AWS's "
    "current price lists"
)


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int
    usd_per_hour: float
    gpu_model: str = ""


# EC2 instances (AWS Batch on EC2 runs jobs on these).
EC2_INSTANCES: tuple[InstanceType, ...] = (
    InstanceType("c5.large", 2, 4, 0, 0.085),
    InstanceType("m5.large", 2, 8, 0, 0.096),
    InstanceType("r5.large", 2, 16, 0, 0.126),
    InstanceType("c5.xlarge", 4, 8, 0, 0.17),
    InstanceType("m5.xlarge", 4, 16, 0, 0.192),
    InstanceType("r5.xlarge", 4, 32, 0, 0.252),
    InstanceType("c5.2xlarge", 8, 16, 0, 0.34),
    InstanceType("m5.2xlarge", 8, 32, 0, 0.384),
    InstanceType("r5.2xlarge", 8, 64, 0, 0.504),
    InstanceType("c5.4xlarge", 16, 32, 0, 0.68),
    InstanceType("m5.4xlarge", 16, 64, 0, 0.768),
    InstanceType("r5.4xlarge", 16, 128, 0, 1.008),
    InstanceType("m5.8xlarge", 32, 128, 0, 1.536),
    InstanceType("g4dn.xlarge", 4, 16, 1, 0.526, "NVIDIA T4"),
    InstanceType("g4dn.2xlarge", 8, 32, 1, 0.752, "NVIDIA T4"),
    InstanceType("g5.xlarge", 4, 16, 1, 1.006, "NVIDIA A10G"),
    InstanceType("p3.2xlarge", 8, 61, 1, 3.06, "NVIDIA V100"),
    InstanceType("g4dn.12xlarge", 48, 192, 4, 3.912, "NVIDIA T4"),
    InstanceType("g5.12xlarge", 48, 192, 4, 5.672, "NVIDIA A10G"),
    InstanceType("p3.8xlarge", 32, 244, 4, 12.24, "NVIDIA V100"),
)

# SageMaker training instances (ml.* prices include SageMaker's management charge).
SAGEMAKER_TRAINING_INSTANCES: tuple[InstanceType, ...] = (
    InstanceType("ml.m5.large", 2, 8, 0, 0.115),
    InstanceType("ml.c5.xlarge", 4, 8, 0, 0.204),
    InstanceType("ml.m5.xlarge", 4, 16, 0, 0.23),
    InstanceType("ml.c5.2xlarge", 8, 16, 0, 0.408),
    InstanceType("ml.m5.2xlarge", 8, 32, 0, 0.461),
    InstanceType("ml.c5.4xlarge", 16, 32, 0, 0.816),
    InstanceType("ml.m5.4xlarge", 16, 64, 0, 0.922),
    InstanceType("ml.g4dn.xlarge", 4, 16, 1, 0.736, "NVIDIA T4"),
    InstanceType("ml.g4dn.2xlarge", 8, 32, 1, 0.94, "NVIDIA T4"),
    InstanceType("ml.g5.xlarge", 4, 16, 1, 1.408, "NVIDIA A10G"),
    InstanceType("ml.p3.2xlarge", 8, 61, 1, 3.825, "NVIDIA V100"),
    InstanceType("ml.g4dn.12xlarge", 48, 192, 4, 4.89, "NVIDIA T4"),
    InstanceType("ml.g5.12xlarge", 48, 192, 4, 7.09, "NVIDIA A10G"),
    InstanceType("ml.p3.8xlarge", 32, 244, 4, 14.688, "NVIDIA V100"),
)

TABLES: dict[str, tuple[InstanceType, ...]] = {
    "ec2": EC2_INSTANCES,
    "sagemaker": SAGEMAKER_TRAINING_INSTANCES,
}


@dataclass(frozen=True)
class CostEstimate:
    instance_type: str
    instance_count: int
    usd_per_hour: float  # for all instances together
    hours: float | None  # the time limit in hours; None when no limit was given
    usd_total: float | None  # usd_per_hour x hours; None without a time limit
    table_date: str
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "usd_per_hour": round(self.usd_per_hour, 4),
            "hours": self.hours,
            "usd_total": None if self.usd_total is None else round(self.usd_total, 2),
            "table_date": self.table_date,
            "estimate": True,
            "note": self.note,
        }

    def summary(self) -> str:
        count = f"{self.instance_count} x " if self.instance_count > 1 else ""
        source = f"approximate list prices as of {self.table_date}" + (
            "" if PRICE_TABLE_VERIFIED else ", not verified against AWS's current prices"
        )
        if self.usd_total is None:
            return (
                f"Estimated ${self.usd_per_hour:.2f}/hour on {count}{self.instance_type} "
                f"(no time limit given; {source})"
            )
        return (
            f"Estimated at most ${self.usd_total:.2f}: {count}{self.instance_type} at "
            f"${self.usd_per_hour:.2f}/hour for the {self.hours:g} h time limit ({source})"
        )


def find_instance(table: str, name: str) -> InstanceType | None:
    for instance in TABLES[table]:
        if instance.name == name:
            return instance
    return None


def instance_for(resources: Resources, table: str = "sagemaker") -> InstanceType:
    """The cheapest listed instance type with at least the requested vCPUs, memory and GPUs."""
    cpus = float(resources.cpus or 1)
    memory_gib = parse_memory_bytes(resources.memory) / 1024**3 if resources.memory else 0.0
    gpus = int(resources.gpus or 0)
    fitting = [
        i
        for i in TABLES[table]
        if i.vcpus >= cpus
        and i.memory_gib >= memory_gib
        and i.gpus >= gpus
        and (gpus > 0 or i.gpus == 0)  # never pick a GPU machine for a CPU job
    ]
    if not fitting:
        largest = max(TABLES[table], key=lambda i: (i.gpus, i.vcpus, i.memory_gib))
        raise ConfigError(
            f"No instance type in cloudpromote's table has {cpus:g} vCPUs, "
            f"{memory_gib:g} GiB and {gpus} GPUs (the largest listed is {largest.name}).",
            "Ask for less, or name an instance type yourself with the 'instance_type' setting.",
        )
    return min(fitting, key=lambda i: (i.usd_per_hour, i.vcpus, i.memory_gib))


def estimate(
    resources: Resources,
    *,
    table: str,
    instance_type: str = "",
    instance_count: int = 1,
    spot: bool = False,
) -> CostEstimate:
    """Price per hour x time limit for the instance the resources map to (or the one named)."""
    if instance_type:
        instance = find_instance(table, instance_type)
        if instance is None:
            return CostEstimate(
                instance_type,
                instance_count,
                0.0,
                None,
                None,
                PRICE_TABLE_DATE,
                f"{instance_type} is not in cloudpromote's price table; no estimate.",
            )
    else:
        instance = instance_for(resources, table)
    hours = None
    if resources.time_limit:
        hours = round(parse_duration_seconds(resources.time_limit) / 3600, 4)
    per_hour = instance.usd_per_hour * max(1, instance_count)
    total = per_hour * hours if hours is not None else None
    note = (
        f"Estimate only: on-demand list price in {PRICE_TABLE_REGION} as of "
        f"{PRICE_TABLE_DATE}; excludes storage and data transfer; a job ending before "
        "its time limit costs less."
    )
    if spot:
        note += " Managed spot usually costs much less, but the job may wait or be interrupted."
    return CostEstimate(
        instance.name, max(1, instance_count), per_hour, hours, total, PRICE_TABLE_DATE, note
    )
