"""The front half of the pipeline as one call: notebook -> Promotion (what preview shows).

check, convert and resolve each stay usable alone; this only composes them in order and
merges their findings, so the CLI, the server and the magic preview exactly the same thing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as PackagingRequirement
from packaging.utils import canonicalize_name

from .check import check_notebook
from .config import CloudPromote
from .convert import coerce_parameters, convert_notebook
from .errors import ConfigError
from .kernelenv import find_kernel_environment, kernel_name_of
from .models import (
    Finding,
    Promotion,
    PromotionOptions,
    Requirement,
    ResolvedRequirements,
    Severity,
)
from .notebook import read_notebook
from .package import default_base_image, render_dockerfile
from .resolve import resolve_requirements


def merge_findings(*groups: list[Finding]) -> list[Finding]:
    """One finding per (code, cell, line), the most severe kept; sorted for display."""
    best: dict[tuple[str, int | None, int | None], Finding] = {}
    for group in groups:
        for finding in group:
            key = (finding.code, finding.cell, finding.line)
            kept = best.get(key)
            if kept is None or finding.severity.rank > kept.severity.rank:
                best[key] = finding
    return sorted(
        best.values(),
        key=lambda f: (-f.severity.rank, -1 if f.cell is None else f.cell, f.line or 0, f.code),
    )


EDITED_SOURCE = "edited"


def parse_edited_requirements(lines: list[str]) -> list[Requirement]:
    """The user's own requirement lines as Requirements (source "edited"), in their order.

    Blank lines and `#` comments are dropped. Anything else must be one PEP 508
    requirement: pip options (`-r`, `--index-url`) and line breaks are refused, so nothing
    typed here reaches pip as anything but a requirement.
    """
    parsed: list[Requirement] = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if "\n" in line or "\r" in line:
                raise InvalidRequirement("a line break inside one requirement")
            requirement = PackagingRequirement(line)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"The requirement line {line!r} is not a valid requirement ({reason}).",
                "Write one PEP 508 requirement per line, such as 'pandas==2.1.3', "
                "'requests>=2.31' or 'name @ https://host/name-1.0-py3-none-any.whl', "
                "or remove the line; set the package index in the CloudPromote "
                "configuration (pip_index_url), not as a pip option here.",
            ) from None
        marker = str(requirement.marker) if requirement.marker else ""
        if requirement.url:
            # A URL needs whitespace before the marker's ';' to parse back.
            specifier = f" @ {requirement.url}" + (" " if marker else "")
        else:
            specifier = str(requirement.specifier)
        parsed.append(
            Requirement(
                name=requirement.name,
                specifier=specifier,
                source=EDITED_SOURCE,
                extras=tuple(sorted(requirement.extras)),
                marker=marker,
            )
        )
    return parsed


def apply_edited_requirements(
    resolved: ResolvedRequirements, edited: list[Requirement]
) -> ResolvedRequirements:
    """Replace the resolved requirements with the user's, and say what that dropped."""
    kept = {canonicalize_name(r.name) for r in edited}
    findings = list(resolved.findings)
    findings.append(
        Finding(
            Severity.INFO,
            "requirements-edited",
            f"The job installs {len(edited)} requirement(s) as edited, instead of the "
            f"{len(resolved.requirements)} detected.",
            "Reset to the detected requirements to go back to what the notebook's imports, "
            "%pip lines and requirement files name.",
        )
    )
    for dropped in resolved.requirements:
        if dropped.source != "import" or dropped.optional:
            continue
        if canonicalize_name(dropped.name) in kept:
            continue
        imports = ", ".join(dropped.imports) or dropped.name
        findings.append(
            Finding(
                Severity.WARNING,
                "edited-requirement-missing",
                f"The notebook imports {imports}, from {dropped.name}, which the edited "
                "requirements no longer list; the job may fail with ModuleNotFoundError.",
                f"Add a line for {dropped.pep508}, unless the base image provides it.",
            )
        )
    return replace(resolved, requirements=edited, findings=findings)


def promote(
    notebook_path: str | Path, options: PromotionOptions, settings: CloudPromote
) -> Promotion:
    """Read, convert, resolve and check a notebook. Raises CloudPromoteError on bad input.

    The notebook file is only read, never written.
    """
    path = Path(notebook_path).resolve()
    # Bad edited lines fail before the notebook is read or the kernel is asked anything.
    edited = (
        None if options.requirements is None else parse_edited_requirements(options.requirements)
    )
    nb = read_notebook(path)
    converted = convert_notebook(nb, path.name)
    env = find_kernel_environment(options.kernel or kernel_name_of(nb))
    resolved = resolve_requirements(converted, path.parent, env, include=options.include)
    if edited is not None:
        resolved = apply_edited_requirements(resolved, edited)
    checked = check_notebook(
        nb,
        path.parent,
        resources=options.resources,
        include=options.include,
        cell_sources=converted.cell_sources,
    )
    parameters = coerce_parameters(converted.parameters, options.parameters)
    base_image = options.base_image or settings.base_image or default_base_image(env.python_version)
    dockerfile = render_dockerfile(
        base_image=base_image,
        notebook_name=path.name,
        content_hash_label=None,
        has_requirements=bool(resolved.requirements) or converted.needs_ipython,
        ca_bundle=bool(settings.extra_ca_bundle),
        keep_ca_bundle=settings.keep_ca_bundle,
        pip_index_url=settings.pip_index_url,
        code_paths=[*resolved.local_modules, *options.include],
    )
    return Promotion(
        notebook_path=path,
        converted=converted,
        resolved=resolved,
        findings=merge_findings(converted.findings, resolved.findings, checked),
        dockerfile=dockerfile,
        parameters=parameters,
        base_image=base_image,
    )
