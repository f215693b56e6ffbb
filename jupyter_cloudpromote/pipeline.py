"""The front half of the pipeline as one call: notebook -> Promotion (what preview shows).

check, convert and resolve each stay usable alone; this only composes them in order and
merges their findings, so the CLI, the server and the magic preview exactly the same thing.
"""

from __future__ import annotations

from pathlib import Path

from .check import check_notebook
from .config import CloudPromote
from .convert import coerce_parameters, convert_notebook
from .kernelenv import find_kernel_environment, kernel_name_of
from .models import Finding, Promotion, PromotionOptions
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


def promote(
    notebook_path: str | Path, options: PromotionOptions, settings: CloudPromote
) -> Promotion:
    """Read, convert, resolve and check a notebook. Raises CloudPromoteError on bad input.

    The notebook file is only read, never written.
    """
    path = Path(notebook_path).resolve()
    nb = read_notebook(path)
    converted = convert_notebook(nb, path.name)
    env = find_kernel_environment(options.kernel or kernel_name_of(nb))
    resolved = resolve_requirements(converted, path.parent, env, include=options.include)
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
