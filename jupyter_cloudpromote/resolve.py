"""Resolve a converted notebook's requirements: imports -> distributions, pinned to the kernel.

Sources, in order of authority for a distribution's version specifier:
requirement files beside the notebook (used as written) > %pip/!pip lines > imports (pinned
to the version installed in the notebook's kernel). Local modules beside the notebook are
packed with the job instead of being installed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as PackagingRequirement
from packaging.utils import canonicalize_name

from . import import_map
from .models import (
    ConvertedNotebook,
    Finding,
    KernelEnvironment,
    Requirement,
    ResolvedRequirements,
    Severity,
)

# Tools that belong to the notebook front end, not to the job: dropped from pip lines and
# files unless the code imports them.
NOTEBOOK_ONLY_DISTRIBUTIONS = frozenset(
    {
        "jupyter-cloudpromote",
        "ipykernel",
        "jupyter",
        "jupyterlab",
        "notebook",
        "nbclassic",
        "jupyter-server",
        "jupyterlab-server",
        "jupyter-contrib-nbextensions",
        "jupyter-nbextensions-configurator",
        "nb-conda-kernels",
    }
)
_OPTIONAL_IMPORT_ERRORS = frozenset(
    {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
)
# Cell magics whose body is Python run in the kernel; their imports count.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "memit", "mprun"})
_WRITE_CELL_MAGICS = frozenset({"writefile", "file"})
_SOURCE_PRIORITY = {"import": 0, "pip-line": 1}  # files beside the notebook: 2
_FILE_SOURCES = ("requirements.txt", "environment.yml", "pyproject.toml")
_MAX_LOCAL_FILES = 500

_IMPORT_LINE = re.compile(r"^\s*import\s+(.+?)\s*(?:#.*)?$")
_FROM_LINE = re.compile(r"^\s*from\s+(\.*[\w.]*)\s+import\s+(.+?)\s*(?:#.*)?$")
_WRITEFILE_LINE = re.compile(r"^\s*%%(?:writefile|file)\s+(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ImportUse:
    """One import found in the notebook's code."""

    top_level: str  # "google", "numpy"; "" for a relative import without a module
    module: str  # the full dotted module as written: "google.cloud", "sklearn.svm"
    cell: int | None  # code cell index (None for an import in a local module file)
    line: int  # 1-based line inside the cell or file
    optional: bool = False  # inside try/except ImportError (or contextlib.suppress)
    dynamic: bool = False  # __import__("x") / importlib.import_module("x")
    names: tuple[str, ...] = ()  # for `from module import a, b`: ("a", "b")
    relative: bool = False
    path: str | None = None  # the local module file it was found in, notebook-relative

    def targets(self) -> list[str]:
        """Dotted names to resolve: `from google.cloud import storage` -> google.cloud.storage."""
        if self.names and "*" not in self.names:
            return [f"{self.module}.{name}" for name in self.names]
        return [self.module]


# ---------------------------------------------------------------- finding imports


def find_imports(cell_sources: dict[int, str]) -> list[ImportUse]:
    """Every import in the cells, by AST (regex fallback for a cell that does not parse)."""
    uses: list[ImportUse] = []
    for cell in sorted(cell_sources):
        uses.extend(_imports_in_source(cell_sources[cell], cell=cell, path=None))
    return uses


def _imports_in_source(source: str, *, cell: int | None, path: str | None) -> list[ImportUse]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return list(_regex_imports(source, cell=cell, path=path))
    visitor = _ImportVisitor(cell=cell, path=path)
    visitor.visit(tree)
    return sorted(visitor.uses, key=lambda use: (use.line, use.module, use.names))


def _regex_imports(source: str, *, cell: int | None, path: str | None) -> Iterator[ImportUse]:
    for number, text in enumerate(source.splitlines(), start=1):
        if match := _FROM_LINE.match(text):
            module = match.group(1)
            names = tuple(
                part.split(" as ")[0].strip(" ()\\")
                for part in match.group(2).split(",")
                if part.strip(" ()\\")
            )
            yield _make_use(module, names, cell, number, path=path)
        elif match := _IMPORT_LINE.match(text):
            for part in match.group(1).split(","):
                module = part.split(" as ")[0].strip()
                if re.fullmatch(r"[A-Za-z_][\w.]*", module):
                    yield _make_use(module, (), cell, number, path=path)


def _make_use(
    module: str,
    names: tuple[str, ...],
    cell: int | None,
    line: int,
    *,
    optional: bool = False,
    dynamic: bool = False,
    path: str | None = None,
) -> ImportUse:
    relative = module.startswith(".")
    dotted = module.lstrip(".")
    return ImportUse(
        top_level="" if relative else dotted.split(".")[0],
        module=module,
        cell=cell,
        line=line,
        optional=optional,
        dynamic=dynamic,
        names=names,
        relative=relative,
        path=path,
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for node in types:
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
        if name in _OPTIONAL_IMPORT_ERRORS:
            return True
    return False


def _is_suppress_import_error(item: ast.withitem) -> bool:
    call = item.context_expr
    if not isinstance(call, ast.Call):
        return False
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name == "suppress" and any(
        getattr(arg, "id", getattr(arg, "attr", None)) in _OPTIONAL_IMPORT_ERRORS
        for arg in call.args
    )


def _literal_module_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        name = node.value
        # Only real module paths: "vertex-ai-samples.x" is a folder trick, not an import name.
        if re.fullmatch(r"\.*[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            return name
    return None


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, *, cell: int | None, path: str | None, line_offset: int = 0) -> None:
        self.cell = cell
        self.path = path
        self.line_offset = line_offset
        self.optional_depth = 0
        self.uses: list[ImportUse] = []

    def _add(
        self, module: str, names: tuple[str, ...], node: ast.AST, dynamic: bool = False
    ) -> None:
        line = getattr(node, "lineno", 1) + self.line_offset
        self.uses.append(
            _make_use(
                module,
                names,
                self.cell,
                line,
                optional=self.optional_depth > 0,
                dynamic=dynamic,
                path=self.path,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, (), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        self._add(module, tuple(alias.name for alias in node.names), node)

    def _visit_try(self, node: Any) -> None:
        optional = any(_catches_import_error(h) for h in node.handlers)
        self.optional_depth += optional
        for stmt in node.body:
            self.visit(stmt)
        self.optional_depth -= optional
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_Try = _visit_try
    visit_TryStar = _visit_try

    def visit_With(self, node: ast.With) -> None:
        optional = any(_is_suppress_import_error(item) for item in node.items)
        self.optional_depth += optional
        self.generic_visit(node)
        self.optional_depth -= optional

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (isinstance(func, ast.Name) and func.id in {"__import__", "import_module"}) or (
            isinstance(func, ast.Attribute)
            and func.attr == "import_module"
            and isinstance(func.value, ast.Name)
            and func.value.id == "importlib"
        ):
            name = _literal_module_name(node.args[0]) if node.args else None
            if name is not None:
                self._add(name, (), node, dynamic=True)
        elif (
            isinstance(func, ast.Attribute)
            and func.attr == "run_cell_magic"
            and len(node.args) >= 3
            and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[:3])
        ):
            magic = node.args[0].value  # type: ignore[attr-defined]
            if magic in _PYTHON_CELL_MAGICS:
                self._visit_magic_body(node.args[2].value, node)  # type: ignore[attr-defined]
        self.generic_visit(node)

    def _visit_magic_body(self, body: str, node: ast.AST) -> None:
        # %%time / %%capture bodies run in the kernel: their imports count. Lines are offset
        # so they point at the cell's line of the body (the magic line is line 1).
        offset = getattr(node, "lineno", 1) + self.line_offset
        try:
            tree = ast.parse(body)
        except (SyntaxError, ValueError):
            for use in _regex_imports(body, cell=self.cell, path=self.path):
                self.uses.append(replace(use, line=use.line + offset))
            return
        inner = _ImportVisitor(cell=self.cell, path=self.path, line_offset=offset)
        inner.optional_depth = self.optional_depth
        inner.visit(tree)
        self.uses.extend(inner.uses)


# ---------------------------------------------------------------- local modules


def _written_module_names(converted: ConvertedNotebook) -> set[str]:
    """Module names the notebook writes itself (%%writefile x.py, open("x.py", "w"))."""
    paths: list[str] = list(converted.referenced_files)
    texts = [*converted.cell_sources.values(), converted.script]
    for text in texts:
        paths.extend(m.group(1) for m in _WRITEFILE_LINE.finditer(text))
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if name == "run_cell_magic" and len(args) >= 2 and args[0] in _WRITE_CELL_MAGICS:
                paths.append(str(args[1]))
            elif name == "open" and args and isinstance(args[0], str):
                mode = args[1] if len(args) > 1 else ""
                for kw in node.keywords:
                    if kw.arg == "mode" and isinstance(kw.value, ast.Constant):
                        mode = kw.value.value
                if isinstance(mode, str) and any(c in mode for c in "wax"):
                    paths.append(args[0])
    names: set[str] = set()
    for raw in paths:
        words = [w for w in raw.split() if not w.startswith("-")]
        for word in words:
            candidate = Path(word.strip("'\""))
            if candidate.suffix == ".py":
                if candidate.stem != "__init__":
                    names.add(candidate.stem)
                names.update(p for p in candidate.parts[:-1] if p.isidentifier())
    return names


def _local_module_path(notebook_dir: Path, name: str) -> str | None:
    """The notebook-relative path of a module or package named `name` beside the notebook."""
    if not name.isidentifier():
        return None
    single = notebook_dir / f"{name}.py"
    if single.is_file():
        return single.name
    package = notebook_dir / name
    if package.is_dir() and ((package / "__init__.py").is_file() or any(package.glob("*.py"))):
        return name
    for extension in notebook_dir.glob(f"{name}.*.so"):
        return extension.name
    return None


def _python_files_of(notebook_dir: Path, relative: str) -> list[Path]:
    target = notebook_dir / relative
    if target.is_file():
        return [target] if target.suffix == ".py" else []
    return sorted(target.rglob("*.py"))[:_MAX_LOCAL_FILES]


# ---------------------------------------------------------------- requirement files


@dataclass
class _FileEntries:
    """Requirements read from the files beside the notebook."""

    requirements: list[Requirement] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # which files were found
    names: set[str] = field(default_factory=set)  # canonical names they list


def _requirement_from_pep508(text: str, source: str) -> Requirement:
    parsed = PackagingRequirement(text)
    specifier = f" @ {parsed.url}" if parsed.url else str(parsed.specifier)
    return Requirement(
        name=parsed.name,
        specifier=specifier,
        source=source,
        extras=tuple(sorted(parsed.extras)),
        marker=str(parsed.marker) if parsed.marker else "",
    )


def _read_requirements_txt(
    path: Path, notebook_dir: Path, entries: _FileEntries, source: str, seen: set[Path]
) -> None:
    resolved = path.resolve()
    if resolved in seen:
        return
    seen.add(resolved)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        entries.findings.append(
            Finding(
                Severity.WARNING,
                "requirements-file-unreadable",
                f"Could not read {_rel(path, notebook_dir)}: {exc}.",
                "Fix or remove the file; until then its requirements are not used.",
                path=_rel(path, notebook_dir),
            )
        )
        return
    lines = text.replace("\\\n", " ").splitlines()
    for number, raw in enumerate(lines, start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        where = _rel(path, notebook_dir)
        if line.startswith("-"):
            option, _, value = line.partition(" ")
            if "=" in option:
                option, _, value = line.partition("=")
            value = value.strip()
            if option in {"-r", "--requirement"} and value:
                _read_requirements_txt(path.parent / value, notebook_dir, entries, source, seen)
                continue
            entries.findings.append(
                Finding(
                    Severity.INFO,
                    "requirements-option-skipped",
                    f"{where} line {number}: the option `{option}` is not carried into the "
                    "job's requirements.",
                    "Set index URLs and CA bundles in the CloudPromote configuration "
                    "(pip_index_url, extra_ca_bundle); install local packages by including "
                    "them with the job.",
                    path=where,
                    line=number,
                )
            )
            continue
        line = re.split(r"\s+--", line, maxsplit=1)[0]  # per-line options such as --hash
        _add_file_requirement(line, source, where, number, entries)


def _add_file_requirement(
    text: str, source: str, where: str, number: int | None, entries: _FileEntries
) -> None:
    try:
        requirement = _requirement_from_pep508(text, source)
    except InvalidRequirement as exc:
        entries.findings.append(
            Finding(
                Severity.WARNING,
                "requirement-invalid",
                f"{where}{f' line {number}' if number else ''}: `{text}` is not a valid "
                f"requirement ({exc}); it was skipped.",
                "Write it as a PEP 508 requirement, e.g. `name==1.2` or "
                "`name @ https://host/name-1.2-py3-none-any.whl`.",
                path=where,
                line=number,
            )
        )
        return
    entries.requirements.append(requirement)
    entries.names.add(canonicalize_name(requirement.name))


# Conda names that differ on PyPI.
_CONDA_TO_PYPI = {
    "pytorch": "torch",
    "py-xgboost": "xgboost",
    "pytables": "tables",
    "python-graphviz": "graphviz",
    "matplotlib-base": "matplotlib",
    "msgpack-python": "msgpack",
    "pyqt": "pyqt5",
    "opencv": "opencv-python",
    "libopencv": "opencv-python",
    "tensorflow-base": "tensorflow",
}
_CONDA_ONLY = frozenset(
    {
        "cudatoolkit",
        "cudnn",
        "cuda",
        "cuda-toolkit",
        "cuda-nvcc",
        "nccl",
        "nodejs",
        "ffmpeg",
        "git",
        "make",
        "gcc",
        "gxx",
        "compilers",
        "c-compiler",
        "cxx-compiler",
        "fortran-compiler",
        "openjdk",
        "blas",
        "openblas",
        "pkg-config",
        "zlib",
        "hdf5",
        "proj",
        "geos",
        "poppler",
        "tesseract",
        "graphviz",
        "r-base",
        "r-essentials",
        "conda",
        "mamba",
        "openssl",
        "ca-certificates",
        "tk",
        "xz",
    }
)
_CONDA_SPEC = re.compile(r"^(?:[\w.-]+::)?([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")


def _conda_to_pep508(spec: str) -> tuple[str, str] | None:
    """("name", "specifier") for a conda match spec, or None if it cannot be read."""
    match = _CONDA_SPEC.match(spec.strip())
    if not match:
        return None
    name, version = match.group(1).lower(), match.group(2).strip()
    version = version.split("=")[0] if version.count("=") >= 2 and "==" not in version else version
    if version.startswith("=") and not version.startswith("=="):
        parts = version[1:].split("=")  # "=1.26=py311_0": the build string is dropped
        version = f"=={parts[0]}" if parts[0].endswith("*") else f"=={parts[0]}.*"
    elif version and version[0].isdigit():
        version = f"=={version}" if version.endswith("*") else f"=={version}.*"
    return _CONDA_TO_PYPI.get(name, name), version.replace(" ", "")


def _read_environment_yml(path: Path, notebook_dir: Path, entries: _FileEntries) -> None:
    where = _rel(path, notebook_dir)
    dependencies = _environment_dependencies(path)
    if dependencies is None:
        entries.findings.append(
            Finding(
                Severity.WARNING,
                "requirements-file-unreadable",
                f"Could not read the dependencies of {where}.",
                "Check that it is a valid conda environment file with a `dependencies:` list.",
                path=where,
            )
        )
        return
    for item in dependencies:
        if isinstance(item, dict):
            for pip_entry in item.get("pip") or []:
                text = str(pip_entry).strip()
                if text.startswith(("-r ", "--requirement ")):
                    target = text.split(None, 1)[1]
                    _read_requirements_txt(
                        path.parent / target, notebook_dir, entries, "environment.yml", set()
                    )
                elif text.startswith("-"):
                    continue
                else:
                    _add_file_requirement(text, "environment.yml", where, None, entries)
            continue
        converted = _conda_to_pep508(str(item))
        if converted is None:
            continue
        name, specifier = converted
        if name in {"python", "pip"}:
            continue
        if name in _CONDA_ONLY or name.startswith(("r-", "lib")):
            entries.findings.append(
                Finding(
                    Severity.WARNING,
                    "conda-only-package",
                    f"{where} lists the conda package `{item}`, which has no pip equivalent; "
                    "the job's pip environment will not have it.",
                    "Use a base image that provides it (the base_image setting), or install it "
                    "from a PyPI package that bundles it.",
                    path=where,
                )
            )
            continue
        _add_file_requirement(f"{name}{specifier}", "environment.yml", where, None, entries)


def _environment_dependencies(path: Path) -> list[Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with jupyter_server's dependencies
        return _simple_environment_dependencies(text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        return None
    return list(data["dependencies"])


def _simple_environment_dependencies(text: str) -> list[Any] | None:
    # Enough YAML for the usual environment.yml: a `dependencies:` list with a `- pip:` list.
    dependencies: list[Any] = []
    pip_list: list[str] | None = None
    inside = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw.startswith((" ", "-", "\t")):
            inside = line.strip() == "dependencies:"
            continue
        if not inside:
            continue
        item = line.strip()
        if item.startswith("- pip:"):
            pip_list = []
            dependencies.append({"pip": pip_list})
        elif item.startswith("-"):
            value = item[1:].strip().strip("'\"")
            indent = len(line) - len(line.lstrip())
            if pip_list is not None and indent > 2:
                pip_list.append(value)
            else:
                pip_list = None
                dependencies.append(value)
    return dependencies if inside or dependencies else None


def _read_pyproject(path: Path, notebook_dir: Path, entries: _FileEntries) -> None:
    where = _rel(path, notebook_dir)
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            return
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        entries.findings.append(
            Finding(
                Severity.WARNING,
                "requirements-file-unreadable",
                f"Could not read {where}: {exc}.",
                "Fix the TOML syntax; until then its dependencies are not used.",
                path=where,
            )
        )
        return
    for text in (data.get("project") or {}).get("dependencies") or []:
        _add_file_requirement(str(text), "pyproject.toml", where, None, entries)


def _read_files_beside(notebook_dir: Path) -> _FileEntries:
    entries = _FileEntries()
    requirements_txt = notebook_dir / "requirements.txt"
    if requirements_txt.is_file():
        entries.files.append("requirements.txt")
        _read_requirements_txt(requirements_txt, notebook_dir, entries, "requirements.txt", set())
    for name in ("environment.yml", "environment.yaml"):
        if (notebook_dir / name).is_file():
            entries.files.append(name)
            _read_environment_yml(notebook_dir / name, notebook_dir, entries)
            break
    if (notebook_dir / "pyproject.toml").is_file():
        entries.files.append("pyproject.toml")
        _read_pyproject(notebook_dir / "pyproject.toml", notebook_dir, entries)
    return entries


def _rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- import -> distribution


@dataclass(frozen=True)
class _Mapping:
    kind: str  # "installed", "table", "hosted", "unknown"
    distribution: str | None
    display: str  # the import name to show: "numpy", "google.cloud.storage"
    detail: str = ""  # for "hosted": the product


def _namespace_tops(env: KernelEnvironment) -> frozenset[str]:
    tops = set(import_map.NAMESPACE_PACKAGES)
    for top, dists in env.packages_distributions.items():
        names = {canonicalize_name(d) for d in dists}
        if len(names) > 1 and canonicalize_name(top) not in names:
            tops.add(top)
    return frozenset(tops)


def _display_name(target: str, namespace: bool) -> str:
    parts = target.split(".")
    if not namespace:
        return parts[0]
    depth = 3 if len(parts) > 2 and parts[1] in {"cloud", "storage", "mgmt", "ai"} else 2
    return ".".join(parts[:depth])


def _map_target(target: str, env: KernelEnvironment, namespace_tops: frozenset[str]) -> _Mapping:
    parts = target.split(".")
    top = parts[0]
    namespace = top in namespace_tops
    # 1. The kernel's own environment, deepest namespace sub-package first.
    for length in range(len(parts), 1, -1):
        key = ".".join(parts[:length])
        dists = env.namespace_modules.get(key)
        if dists:
            shown = key if namespace else top
            return _Mapping("installed", _prefer(dists, key), shown)
    if not namespace and top in env.packages_distributions:
        return _Mapping("installed", _prefer(env.packages_distributions[top], top), top)
    shown = _display_name(target, namespace)
    # 2. The maintained table.
    product = import_map.hosted_only(target)
    if product:
        return _Mapping("hosted", None, shown, product)
    distribution = import_map.distribution_for(target)
    if distribution is None:
        return _Mapping("unknown", None, shown)
    return _Mapping("table", distribution, shown)


def _prefer(dists: list[str], import_name: str) -> str:
    wanted = canonicalize_name(import_name.split(".")[-1])
    names = sorted({canonicalize_name(d) for d in dists})
    for name in names:
        if name == wanted or name == canonicalize_name(import_name):
            return name
    return names[0]


def _where(use: ImportUse) -> str:
    if use.path:
        return f"{use.path} line {use.line}"
    return f"cell {use.cell}, line {use.line}" if use.cell is not None else f"line {use.line}"


# ---------------------------------------------------------------- the resolver


def resolve_requirements(
    converted: ConvertedNotebook,
    notebook_dir: Path,
    env: KernelEnvironment,
    *,
    include: list[str] | None = None,
) -> ResolvedRequirements:
    """Requirements for the converted notebook, pinned to the kernel `env`, plus findings."""
    notebook_dir = Path(notebook_dir)
    findings: list[Finding] = []
    stdlib = set(env.stdlib) | {"__future__"}
    namespace_tops = _namespace_tops(env)

    files = _read_files_beside(notebook_dir)
    findings.extend(files.findings)
    pip_entries, pip_findings = _pip_line_requirements(converted.pip_requirements, env)
    findings.extend(pip_findings)
    declared = files.names | {canonicalize_name(r.name) for r in pip_entries}

    # Local modules: beside the notebook, included by the user, or written by the notebook.
    included: dict[str, str] = {}
    for entry in include or []:
        candidate = Path(entry)
        stem = candidate.stem if candidate.suffix == ".py" else candidate.name
        if stem.isidentifier():
            included[stem] = candidate.as_posix()
    written = _written_module_names(converted)

    uses = find_imports(converted.cell_sources)
    local_paths: dict[str, str] = {}
    pending = list(uses)
    all_uses: list[ImportUse] = []
    scanned: set[str] = set()
    while pending:
        use = pending.pop(0)
        all_uses.append(use)
        top = use.top_level
        if use.relative or not top or top in stdlib or top in local_paths:
            continue
        local = included.get(top) or _local_module_path(notebook_dir, top)
        if local is None:
            continue
        local_paths[top] = local
        # A local module's own imports are the job's imports too.
        for file in _python_files_of(notebook_dir, local):
            relative = _rel(file, notebook_dir)
            if relative in scanned:
                continue
            scanned.add(relative)
            try:
                source = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            pending.extend(_imports_in_source(source, cell=None, path=relative))

    local_names = set(local_paths) | written
    local_package_names = _local_package_names(notebook_dir, local_paths)
    by_distribution: dict[str, Requirement] = {}
    reported: set[tuple[str, str]] = set()

    for use in all_uses:
        top = use.top_level
        if use.relative or not top or top in stdlib or top in local_names:
            continue
        if use.path and top in local_package_names:
            continue  # a local package importing its own sub-modules absolutely
        for target in use.targets():
            mapping = _map_target(target, env, namespace_tops)
            requirement, finding = _requirement_for(use, mapping, env, declared, reported)
            if finding is not None:
                findings.append(finding)
            if requirement is not None:
                key = canonicalize_name(requirement.name)
                by_distribution[key] = _merge(by_distribution.get(key), requirement)

    imported = set(by_distribution)
    for requirement in [*pip_entries, *files.requirements]:
        key = canonicalize_name(requirement.name)
        if key in NOTEBOOK_ONLY_DISTRIBUTIONS and key not in imported:
            findings.append(
                Finding(
                    Severity.INFO,
                    "notebook-tool-dropped",
                    f"{requirement.name} ({requirement.source}) is a notebook tool the job does "
                    "not need; it was left out of the job's requirements.",
                    "Nothing to do; import it in the code if the job really needs it.",
                )
            )
            continue
        by_distribution[key] = _merge(by_distribution.get(key), requirement)

    if files.files:
        findings.extend(_missing_from_files(by_distribution, files))

    requirements = [by_distribution[key] for key in sorted(by_distribution)]
    return ResolvedRequirements(
        requirements=requirements,
        findings=findings,
        local_modules=sorted(set(local_paths.values())),
        python_version=env.python_version,
        environment=env,
    )


def _local_package_names(notebook_dir: Path, local_paths: dict[str, str]) -> set[str]:
    return {name for name, path in local_paths.items() if (notebook_dir / path).is_dir()}


def _requirement_for(
    use: ImportUse,
    mapping: _Mapping,
    env: KernelEnvironment,
    declared: set[str],
    reported: set[tuple[str, str]],
) -> tuple[Requirement | None, Finding | None]:
    kernel = env.kernel_name
    how = "dynamically imported" if use.dynamic else "imported"
    first_report = (mapping.display, mapping.kind) not in reported
    reported.add((mapping.display, mapping.kind))

    def once(finding: Finding) -> Finding | None:
        return finding if first_report else None

    if mapping.kind == "hosted":
        return None, once(
            Finding(
                Severity.WARNING,
                "import-no-distribution",
                f"{mapping.display} is {how} ({_where(use)}) but exists only in "
                f"{mapping.detail}; no package provides it, so the job will not have it.",
                f'Guard it (`if "{mapping.display}" in sys.modules` or try/except '
                "ImportError), or tag its cell `skip-job`.",
                cell=use.cell,
                line=use.line,
                path=use.path,
            )
        )
    if mapping.kind == "unknown" or mapping.distribution is None:
        severity = Severity.INFO if use.optional else Severity.WARNING
        return None, once(
            Finding(
                severity,
                "import-no-distribution",
                f"{mapping.display} is {how} ({_where(use)}) but no known distribution "
                "provides it.",
                "Add the distribution that provides it to a %pip line or a requirements.txt "
                "beside the notebook.",
                cell=use.cell,
                line=use.line,
                path=use.path,
            )
        )
    distribution: str = canonicalize_name(mapping.distribution)
    installed_version = env.versions.get(distribution)
    if mapping.kind == "table" and installed_version is None:
        # Prefer the variant the user names themselves (opencv-python-headless for cv2).
        for alternative in import_map.alternatives_for(use.module):
            if alternative in declared or alternative in env.versions:
                distribution = alternative
                installed_version = env.versions.get(alternative)
                break
    if installed_version is not None:
        return (
            Requirement(
                name=distribution,
                specifier=f"=={installed_version}",
                source="import",
                imports=(mapping.display,),
                optional=use.optional,
            ),
            None,
        )
    if use.optional:
        return None, once(
            Finding(
                Severity.INFO,
                "optional-import-missing",
                f"{mapping.display} is imported inside try/except ImportError ({_where(use)}) "
                f"and is not installed in the kernel '{kernel}' environment; the job will run "
                "without it, as the notebook does.",
                f"If the job needs it, add `{distribution}` to a %pip line or requirements.txt.",
                cell=use.cell,
                line=use.line,
                path=use.path,
            )
        )
    severity = Severity.INFO if distribution in declared else Severity.WARNING
    return (
        Requirement(
            name=distribution,
            specifier="",
            source="import",
            imports=(mapping.display,),
        ),
        once(
            Finding(
                severity,
                "import-not-installed",
                f"{mapping.display} is {how} ({_where(use)}) but not installed in the kernel "
                f"'{kernel}' environment; mapped to distribution {distribution} unpinned.",
                f"Install it in the kernel (`%pip install {distribution}`) and run the notebook "
                "once, so the job gets the version you tested; or pin it in requirements.txt.",
                cell=use.cell,
                line=use.line,
                path=use.path,
            )
        ),
    )


def _source_rank(source: str) -> int:
    return _SOURCE_PRIORITY.get(source, 2)


def _merge(existing: Requirement | None, new: Requirement) -> Requirement:
    if existing is None:
        return new
    new_wins = _source_rank(new.source) > _source_rank(existing.source)
    winner, other = (new, existing) if new_wins else (existing, new)
    if _source_rank(new.source) == _source_rank(existing.source) and not existing.specifier:
        winner, other = new, existing  # same source: a pinned entry beats an unpinned one
    return replace(
        winner,
        imports=tuple(sorted(set(winner.imports) | set(other.imports))),
        optional=winner.optional and other.optional,
        extras=tuple(sorted(set(winner.extras) | set(other.extras))),
    )


def _pip_line_requirements(
    lines: Iterable[str], env: KernelEnvironment
) -> tuple[list[Requirement], list[Finding]]:
    requirements: list[Requirement] = []
    findings: list[Finding] = []
    for text in lines:
        text = text.strip()
        if not text:
            continue
        try:
            requirement = _requirement_from_pep508(text, "pip-line")
        except InvalidRequirement as exc:
            findings.append(
                Finding(
                    Severity.WARNING,
                    "requirement-invalid",
                    f"The pip line entry `{text}` is not a valid requirement ({exc}); it was "
                    "skipped.",
                    "Write it as a PEP 508 requirement such as `name==1.2`.",
                )
            )
            continue
        installed = env.versions.get(canonicalize_name(requirement.name))
        if not requirement.specifier and installed is not None:
            requirement = replace(requirement, specifier=f"=={installed}")
        requirements.append(requirement)
    return requirements, findings


def _missing_from_files(
    by_distribution: dict[str, Requirement], files: _FileEntries
) -> list[Finding]:
    findings = []
    listed = " and ".join(files.files)
    for key in sorted(by_distribution):
        requirement = by_distribution[key]
        if not requirement.imports or key in files.names or requirement.optional:
            continue
        names = ", ".join(requirement.imports)
        findings.append(
            Finding(
                Severity.WARNING,
                "requirements-file-missing-import",
                f"{names} is imported but {listed} does not list {requirement.name}; "
                f"it was added as {requirement.pep508}.",
                f"Add `{requirement.pep508}` to {files.files[0]} so the file stays complete.",
                path=files.files[0],
            )
        )
    return findings
