"""Readiness check: what will break when a notebook runs unattended as a job, and the fix.

`check_notebook` reads a notebook (never writes it) and returns `Finding`s. It is static
analysis, so it is best effort, and it is tuned for precision: a finding should be right
even if that means some problems are missed.

Numbering: "cell N" in messages is `N = index into nb.cells`, counting every cell from 0
(markdown and raw cells included), the same number as `Finding.cell`. "line L" is 1-based
inside that cell's own source, as the user typed it (before IPython syntax is transformed).

What is looked at:
- the raw cell source, for shell escapes (`!cmd`, `x = !cmd`, `%sx`, `%%bash`), magics
  (`%cd`, `%run`, `%load`, `%%writefile`) and secrets;
- the Python source of each code cell after IPython syntax was handled (`cell_sources`,
  keyed by index into nb.cells, from convert; computed here with IPython when not given),
  for file reads and writes, input(), widgets, imports and the rest.
Cells tagged `skip-job` and cells that use the `%cloud_*` magics are ignored.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import posixpath
import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .models import Finding, Resources, Severity

__all__ = ["check_notebook"]

SKIP_TAG = "skip-job"
PARAMETERS_TAG = "parameters"
OUTPUT_DIR_ENV = "CLOUDPROMOTE_OUTPUT_DIR"

# Cell magics whose body is Python run in the user namespace: their body is analysed too.
PYTHON_BODY_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "memit", "debug"})
SHELL_CELL_MAGICS = frozenset({"bash", "sh", "script", "system"})
WRITEFILE_MAGICS = frozenset({"writefile", "file"})

# ---------------------------------------------------------------------------- shell tools

NETWORK_TOOLS = frozenset(
    {
        "curl", "wget", "gsutil", "gcloud", "aws", "pip", "pip3", "apt", "apt-get",
        "docker", "kubectl", "ssh", "scp", "rsync", "gdown", "kaggle", "conda", "mamba",
        "az", "azcopy", "huggingface-cli", "npm",
    }
)  # fmt: skip
GIT_NETWORK_SUBCOMMANDS = frozenset({"clone", "pull", "fetch", "push", "submodule", "lfs"})
NOT_IN_IMAGE_TOOLS = frozenset(
    {
        "gcloud", "gsutil", "aws", "docker", "kubectl", "nvidia-smi", "conda", "mamba",
        "R", "Rscript", "az", "azcopy", "gdown", "kaggle", "huggingface-cli",
    }
)  # fmt: skip
COMMAND_PREFIXES = frozenset({"sudo", "time", "env", "nohup", "exec", "command", "nice"})
# Tools whose last plain argument is where something is written (copy or download target).
COPY_TOOLS = frozenset({"cp", "mv", "rsync", "scp", "gsutil", "gcloud", "aws", "azcopy", "ln"})
EXTRACT_TOOLS = frozenset({"unzip", "tar", "gunzip", "7z", "bunzip2", "xz"})
# Options whose value names the file or folder a tool writes.
_OUTPUT_OPTIONS: dict[str, tuple[str, ...]] = {
    "wget": ("-O", "-P", "--output-document", "--directory-prefix"),
    "curl": ("-o", "--output"),
    "gdown": ("-O", "--output"),
    "unzip": ("-d",),
    "tar": ("-C", "--directory"),
    "kaggle": ("-p", "--path"),
}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip", ".gz", ".7z")

# --------------------------------------------------------------------- file read rules

# qualified name -> (path position, path keywords, mode position or None, default mode)
_OPEN_LIKE: dict[str, tuple[int, tuple[str, ...], int | None, str]] = {
    "open": (0, ("file",), 1, "r"),
    "io.open": (0, ("file",), 1, "r"),
    "codecs.open": (0, ("filename",), 1, "r"),
    "gzip.open": (0, ("filename",), 1, "rb"),
    "bz2.open": (0, ("filename",), 1, "rb"),
    "lzma.open": (0, ("filename",), 1, "rb"),
    "tarfile.open": (0, ("name",), 1, "r"),
    "zipfile.ZipFile": (0, ("file",), 1, "r"),
    "h5py.File": (0, ("name",), 1, "r"),
    "netCDF4.Dataset": (0, ("filename",), 1, "r"),
}
_READ_FUNCTIONS: dict[str, tuple[int, tuple[str, ...]]] = {
    name: (0, keywords)
    for names, keywords in (
        (("numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile"), ("file", "fname")),
        (("numpy.memmap",), ("filename",)),
        (
            ("torch.load", "joblib.load", "librosa.load", "soundfile.read"),
            ("f", "filename", "path"),
        ),
        (("scipy.io.loadmat", "scipy.io.wavfile.read"), ("file_name", "filename")),
        (("PIL.Image.open",), ("fp",)),
        (("IPython.display.Image",), ("filename",)),
        (
            ("xarray.open_dataset", "xarray.open_dataarray", "xarray.open_zarr"),
            ("filename_or_obj",),
        ),
        (("tensorflow.io.read_file",), ("filename",)),
        (("tensorflow.keras.models.load_model", "keras.models.load_model"), ("filepath",)),
        (("tensorflow.keras.utils.load_img", "keras.utils.load_img"), ("path",)),
    )
    for name in names
}
# Method names that read their first argument whatever the receiver (pd.read_csv, cv2.imread).
_READ_METHOD_SUFFIXES = frozenset(
    {
        "csv", "table", "fwf", "parquet", "excel", "json", "pickle", "feather", "hdf", "orc",
        "sas", "spss", "stata", "xml", "file",
    }
)  # fmt: skip
_READ_METHOD_KEYWORDS = ("filepath_or_buffer", "path", "path_or_buf", "io", "filename", "source")

# ---------------------------------------------------------------------- file write rules

_WRITE_METHOD_SUFFIXES = frozenset(
    {
        "csv", "parquet", "excel", "pickle", "feather", "hdf", "json", "html", "latex",
        "markdown", "stata", "xml", "orc", "netcdf", "zarr", "file",
    }
)  # fmt: skip
_WRITE_KEYWORDS = ("path_or_buf", "path", "excel_writer", "buf", "fname", "filepath", "filename")
# method name -> path position, for writes whatever the receiver (fig.savefig, model.save)
_WRITE_METHODS: dict[str, int] = {
    "savefig": 0, "imsave": 0, "imwrite": 0, "save": 0, "save_weights": 0,
    "save_pretrained": 0, "savetxt": 0, "savez": 0, "savez_compressed": 0,
    "write_csv": 0, "write_parquet": 0, "write_json": 0, "to_filename": 0,
}  # fmt: skip
# qualified name -> path position, where it is not the first argument
_WRITE_FUNCTIONS: dict[str, tuple[int, tuple[str, ...]]] = {
    "torch.save": (1, ("f",)),
    "joblib.dump": (1, ("filename",)),
    "urllib.request.urlretrieve": (1, ("filename",)),
    "shutil.copy": (1, ("dst",)),
    "shutil.copy2": (1, ("dst",)),
    "shutil.copyfile": (1, ("dst",)),
    "shutil.copytree": (1, ("dst",)),
    "shutil.move": (1, ("dst",)),
    "wget.download": (1, ("out",)),
    "gdown.download": (1, ("output",)),
}
# keyword arguments that name a file a call writes, e.g. kfp's compile(package_path=...)
_WRITE_ONLY_KEYWORDS = frozenset({"package_path", "output_path", "output_file", "save_path"})
_PATH_CONSTRUCTORS = frozenset({"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath"})
_JOIN_FUNCTIONS = frozenset({"os.path.join", "posixpath.join"})

# ------------------------------------------------------------------------------- GPUs

# Libraries that need an NVIDIA GPU to do anything at all.
GPU_ONLY_MODULES = frozenset(
    {"cupy", "cupyx", "cudf", "cuml", "cugraph", "pycuda", "tensorrt", "numba.cuda"}
)
# Libraries that use a GPU when there is one and fall back to the CPU otherwise.
GPU_OPTIONAL_MODULES = frozenset({"torch", "tensorflow", "jax", "keras", "tf_keras"})

# ---------------------------------------------------------------------------- widgets

WIDGET_INTERACT = frozenset({"interact", "interactive", "interact_manual"})
INPUT_WIDGETS = frozenset(
    {
        "Text", "Textarea", "Password", "Combobox", "IntText", "FloatText", "BoundedIntText",
        "BoundedFloatText", "IntSlider", "FloatSlider", "FloatLogSlider", "IntRangeSlider",
        "FloatRangeSlider", "SelectionSlider", "SelectionRangeSlider", "Dropdown", "Select",
        "SelectMultiple", "RadioButtons", "ToggleButton", "ToggleButtons", "Checkbox",
        "DatePicker", "ColorPicker", "FileUpload", "Button", "TagsInput",
    }
)  # fmt: skip
WIDGET_READ_ATTRIBUTES = frozenset({"value", "observe", "on_click", "on_submit", "data"})

# ---------------------------------------------------------------------------- secrets

_SECRET_PATTERNS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id", "AWS_ACCESS_KEY_ID"),
    (
        re.compile(
            r"(?i)aws_secret_access_key[\"']?\s*[=:]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        "an AWS secret access key",
        "AWS_SECRET_ACCESS_KEY",
    ),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), "a GitHub token", "GITHUB_TOKEN"),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}"), "a GitHub token", "GITHUB_TOKEN"),
    (re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"), "a Slack token", "SLACK_TOKEN"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), "a Google API key", "GOOGLE_API_KEY"),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}"), "an Anthropic API key", "ANTHROPIC_API_KEY"),
    (
        re.compile(r"\bsk-(?!ant-)(?=[A-Za-z0-9_\-]*\d)[A-Za-z0-9_\-]{20,}"),
        "an API key (sk-…)",
        "OPENAI_API_KEY",
    ),
    (
        re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
        "a private key",
        "PRIVATE_KEY",
    ),
]
_SECRET_NAME = re.compile(
    r"(?i)(?:^|_)(?:password|passwd|pwd|secret|token|api_?key|apikey|access_?key|secret_?key"
    r"|private_?key|auth_?token|client_?secret)$"
)
_PLACEHOLDER_WORDS = (
    "your", "xxx", "changeme", "change_me", "change-me", "placeholder", "example", "dummy",
    "replace", "insert", "todo", "fixme", "***", "...", "<", ">", "{", "}", "$", "secret_here",
    "key_here", "token_here", "redacted", "sample", "fake", "test-key", "testkey",
)  # fmt: skip


# ----------------------------------------------------------------------------- helpers


def _cell_source(cell: nbformat.NotebookNode) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _cell_tags(cell: nbformat.NotebookNode) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _uses_cloud_magic(raw: str) -> bool:
    return any(line.lstrip().startswith(("%cloud_", "%%cloud_")) for line in raw.splitlines())


def _transform(raw: str) -> str | None:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return str(TransformerManager().transform_cell(raw))
    except Exception:  # IPython raises assorted errors on odd input; the cell is skipped
        return None


def _parse(source: str | None) -> ast.Module | None:
    if source is None:
        return None
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _line_mapper(raw: str, transformed: str, offset: int = 0) -> Callable[[int], int]:
    """Map 1-based lines of `transformed` back to lines of `raw` (plus `offset`)."""
    raw_lines = raw.splitlines()
    new_lines = transformed.splitlines()
    mapping: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(a=new_lines, b=raw_lines, autojunk=False)
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        for k in range(a1, a2):
            if tag == "equal":
                mapping[k + 1] = b1 + (k - a1) + 1
            else:
                mapping[k + 1] = min(b1 + (k - a1), max(b2 - 1, b1)) + 1
    last = max(len(raw_lines), 1)
    return lambda line: min(mapping.get(line, line), last) + offset


def _ipython_call(node: ast.AST) -> tuple[str, list[ast.expr]] | None:
    """`get_ipython().METHOD(args)` -> (METHOD, args)."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
    ):
        return node.func.attr, list(node.args)
    return None


def _const_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _mask(secret: str) -> str:
    """A form that identifies a secret to its owner without revealing it."""
    if len(secret) >= 20:
        return f"{secret[:4]}…{secret[-4:]}"
    if len(secret) >= 12:
        return f"{secret[:2]}…{secret[-2:]}"
    return f"…({len(secret)} characters)"


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    if any(word in lowered for word in _PLACEHOLDER_WORDS):
        return True
    if len(set(value)) <= 2:  # "xxxxxxxx", "********", "aaaa1111"-like fillers
        return True
    if value.startswith("[") and value.endswith("]"):
        return True
    return False


def _looks_like_secret_value(value: str) -> bool:
    if len(value) < 8 or any(ch.isspace() for ch in value) or _is_placeholder(value):
        return False
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", value):  # the name of an environment variable
        return False
    if re.search(r"\.(json|pem|key|txt|cfg|ini|ya?ml|p12|env|csv)$", value, re.I):
        return False  # a path to a key file, not the key
    if "://" in value or "secrets/" in value:  # URLs and secret-manager references
        return False
    return True


def _is_url(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", path)) or path.startswith(
        ("data:", "gs:", "s3:")
    )


def _looks_like_path(text: str) -> bool:
    return (
        bool(text.strip())
        and "\n" not in text
        and len(text) < 300
        and not text.lstrip().startswith(("<", "{", "["))
        and text != "-"
    )


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "~", "\\\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", path))


def _is_home_like(path: str) -> bool:
    """Absolute paths that name one person's machine (they won't exist in a job)."""
    if re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("\\\\"):
        return True
    if path.startswith("~/") or path.startswith("~\\"):
        return True
    return path.startswith(("/home/", "/Users/", "/root/", "/Volumes/", "/media/", "/content/"))


def _normalize(path: str) -> str:
    normalized = posixpath.normpath(path.replace("\\", "/"))
    return "" if normalized == "." else normalized


def _join_cwd(cwd: str, path: str) -> str:
    return _normalize(posixpath.join(cwd, path)) if cwd else _normalize(path)


def _covered(path: str, folders: list[str]) -> bool:
    """`path` equals one of `folders` or lies inside one ("" is the notebook folder)."""
    for folder in folders:
        if folder == "" or path == folder or path.startswith(folder.rstrip("/") + "/"):
            return True
    return False


def _strip_archive_suffix(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------------- analysis state


@dataclass
class _Read:
    cell: int
    line: int
    written: str  # the path as the code writes it
    path: str  # relative to the notebook folder ("" cwd applied), or absolute as written
    via: tuple[str, ...]  # variables the path came through
    in_function: bool
    what: str  # "open()", "read_csv()", "%run"...


@dataclass
class _Write:
    cell: int
    line: int
    path: str  # relative to the notebook folder; may hold "*" when it is a pattern
    pattern: bool
    from_python: bool  # written by a Python call (an output the user may want back)
    in_function: bool = False


@dataclass
class _State:
    notebook_dir: Path
    env: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    parameter_names: set[str] = field(default_factory=set)
    imports: dict[str, str] = field(default_factory=dict)
    cwd: str | None = ""  # notebook-relative working folder; None once unknown
    reads: list[_Read] = field(default_factory=list)
    writes: list[_Write] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    defined_names: set[str] = field(default_factory=set)
    widget_vars: dict[str, str] = field(default_factory=dict)
    widget_flagged: set[str] = field(default_factory=set)
    writefile_cells: set[int] = field(default_factory=set)  # %%writefile: helper files
    display_calls: list[tuple[int, int, str]] = field(default_factory=list)
    cuda_calls: list[tuple[int, int, str]] = field(default_factory=list)
    gpu_imports: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    import_sites: dict[str, tuple[int, int]] = field(default_factory=dict)
    cuda_guarded: bool = False
    last_cell: int = -1

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        fix: str,
        cell: int | None = None,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        self.findings.append(Finding(severity, code, message, fix, cell, line, path))


@dataclass
class _Cell:
    index: int
    raw: str
    tree: ast.Module | None  # Python to analyse (python-body cell magics unwrapped)
    line_of: Callable[[int], int]
    magic_tree: ast.Module | None  # our own IPython transform, for magics
    magic_line_of: Callable[[int], int]
    is_parameters: bool


def _unwrap(raw: str, source: str | None) -> tuple[ast.Module | None, Callable[[int], int]]:
    """Parse a cell; a `%%time`-like cell magic is replaced by its parsed Python body."""
    tree = _parse(source)
    if tree is None or source is None:
        return None, lambda line: line
    line_of = _line_mapper(raw, source)
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        call = _ipython_call(tree.body[0].value)
        if call and call[0] == "run_cell_magic" and len(call[1]) == 3:
            name, body = _const_str(call[1][0]), _const_str(call[1][2])
            if name in PYTHON_BODY_CELL_MAGICS and body is not None:
                raw_body = "\n".join(raw.splitlines()[1:])
                inner = _transform(body)
                inner_tree = _parse(inner)
                if inner_tree is None or inner is None:
                    return None, line_of
                return inner_tree, _line_mapper(raw_body, inner, offset=1)
    return tree, line_of


# -------------------------------------------------------------------- path expressions


class _Resolver:
    """Turns simple constant path expressions into text, through known variables."""

    def __init__(self, state: _State, shadowed: frozenset[str] = frozenset()) -> None:
        self.state = state
        self.shadowed = shadowed

    def qualname(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.shadowed:
                return None
            return self.state.imports.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def text(
        self, node: ast.AST | None, used: list[str] | None = None, wild: bool = False
    ) -> str | None:
        """The string value of `node`, or None. With wild=True unknown parts become "*"."""
        unknown = "*" if wild else None
        if node is None:
            return None
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else unknown
        if isinstance(node, ast.JoinedStr):
            parts: list[str] = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(str(value.value))
                elif isinstance(value, ast.FormattedValue) and value.format_spec is None:
                    part = self.text(value.value, used, wild)
                    if part is None:
                        return None
                    parts.append(part)
                elif wild:
                    parts.append("*")
                else:
                    return None
            return "".join(parts)
        if isinstance(node, ast.Name):
            if node.id in self.state.env and node.id not in self.shadowed:
                known, via = self.state.env[node.id]
                if used is not None:
                    used.extend([node.id, *via])
                return known
            return unknown
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Div)):
            left = self.text(node.left, used, wild)
            right = self.text(node.right, used, wild)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Add):
                return left + right
            return self._join([left, right])
        if isinstance(node, ast.Call):
            return self._call_text(node, used, wild)
        return unknown

    def _call_text(self, node: ast.Call, used: list[str] | None, wild: bool) -> str | None:
        unknown = "*" if wild else None
        if any(isinstance(a, ast.Starred) for a in node.args):
            return unknown
        name = self.qualname(node.func)
        if name in _JOIN_FUNCTIONS or name in _PATH_CONSTRUCTORS:
            if not node.args:
                return "." if name in _PATH_CONSTRUCTORS else unknown
            parts = [self.text(a, used, wild) for a in node.args]
            if any(p is None for p in parts):
                return None
            return self._join([p for p in parts if p is not None])
        if name in ("str", "os.fspath", "os.path.expanduser") and len(node.args) == 1:
            return self.text(node.args[0], used, wild)
        if isinstance(node.func, ast.Attribute):
            if node.func.attr == "joinpath":
                base = self.text(node.func.value, used, wild)
                parts = [self.text(a, used, wild) for a in node.args]
                if base is None or any(p is None for p in parts):
                    return None
                return self._join([base, *[p for p in parts if p is not None]])
            if node.func.attr == "format" and isinstance(node.func.value, ast.Constant):
                template = node.func.value.value
                if not isinstance(template, str):
                    return None
                if wild:
                    return re.sub(r"\{[^{}]*\}", "*", template)
                args = [self.text(a, used) for a in node.args]
                kwargs = {k.arg: self.text(k.value, used) for k in node.keywords if k.arg}
                if any(a is None for a in args) or any(v is None for v in kwargs.values()):
                    return None
                try:
                    return template.format(*args, **kwargs)
                except (IndexError, KeyError, ValueError):
                    return None
        return unknown

    @staticmethod
    def _join(parts: list[str]) -> str:
        result = ""
        for part in parts:
            if _is_absolute(part) or not result:
                result = part
            else:
                result = result.rstrip("/\\") + "/" + part
        return result


# ----------------------------------------------------------------- the Python visitor


def _store_names(node: ast.AST) -> set[str]:
    return {
        n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }


def _user_defined(tree: ast.Module) -> set[str]:
    """Names the notebook defines itself (def, class, assignment), not imports."""
    names = _store_names(tree)
    names |= {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    return names


def _bound_names(nodes: Sequence[ast.AST]) -> set[str]:
    """Every name bound anywhere inside `nodes` (assignments, loops, imports, defs)."""
    names: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                names.add(sub.id)
            elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(sub.name)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                for alias in sub.names:
                    names.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(sub, ast.arg):
                names.add(sub.arg)
    return names


class _CellVisitor:
    """Walks one cell's Python in execution order, recording reads, writes and the rest."""

    def __init__(self, state: _State, cell: _Cell) -> None:
        self.state = state
        self.cell = cell
        self.resolver = _Resolver(state)
        self.function_depth = 0
        self.try_depth = 0

    def line(self, node: ast.AST) -> int:
        return self.cell.line_of(getattr(node, "lineno", 1))

    # statements --------------------------------------------------------------------
    def run(self, tree: ast.Module, magic_events: list[tuple[int, Callable[[], None]]]) -> None:
        pending = sorted(magic_events, key=lambda e: e[0])
        for stmt in tree.body:
            line = self.line(stmt)
            while pending and pending[0][0] < line:
                pending.pop(0)[1]()
            # a magic on this very line (e.g. `%cd x` turned into os.chdir by convert) first
            while pending and pending[0][0] == line:
                pending.pop(0)[1]()
            self.visit(stmt)
            self.update_env(stmt)
        for _, event in pending:
            event()

    def update_env(self, stmt: ast.stmt) -> None:
        """Track module-level `NAME = <constant path expression>`; forget rebound names."""
        env = self.state.env
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            used: list[str] = []
            value = self.resolver.text(stmt.value, used)
            if value is None:
                env.pop(stmt.targets[0].id, None)
            else:
                env[stmt.targets[0].id] = (value, tuple(dict.fromkeys(used)))
            return
        if isinstance(stmt, ast.With):  # a with-body runs straight through
            for item in stmt.items:
                if item.optional_vars is not None:
                    for name in _store_names(item.optional_vars):
                        env.pop(name, None)
            for inner in stmt.body:
                self.update_env(inner)
            return
        # anything else that binds a name (loops, branches, defs, imports) makes it unknown
        for name in _bound_names([stmt]):
            env.pop(name, None)

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for decorator in getattr(node, "decorator_list", []):
                self.visit_decorator(decorator)
                self.visit(decorator)
            body = node.body if isinstance(node.body, list) else [node.body]
            shadowed = _bound_names(body) | {
                a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)
            }
            saved = self.resolver
            self.resolver = _Resolver(self.state, self.resolver.shadowed | frozenset(shadowed))
            self.function_depth += 1
            for child in body:
                self.visit(child)
            self.function_depth -= 1
            self.resolver = saved
            return
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                self.visit_decorator(decorator)
            for child in node.body:
                self.visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            self.visit_import(node)
            return
        if isinstance(node, ast.Try):
            self.try_depth += 1
            for child in node.body:
                self.visit(child)
            self.try_depth -= 1
            for handler in node.handlers:
                for child in handler.body:
                    self.visit(child)
            for child in node.orelse + node.finalbody:
                self.visit(child)
            return
        if isinstance(node, ast.Assign):
            self.visit_assign(node)
        if isinstance(node, ast.Call):
            self.visit_call(node)
        if isinstance(node, ast.Attribute):
            self.visit_attribute(node)
        if isinstance(node, ast.Attribute) and node.attr == "is_available":
            if isinstance(node.value, ast.Attribute) and node.value.attr == "cuda":
                self.state.cuda_guarded = True
        for sub in ast.iter_child_nodes(node):
            self.visit(sub)

    # imports -----------------------------------------------------------------------
    def visit_import(self, node: ast.Import | ast.ImportFrom) -> None:
        line = self.line(node)
        modules: list[str] = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules.append(alias.name)
                if alias.asname:
                    self.state.imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    self.state.imports[top] = top
        elif node.module and node.level == 0:
            modules.append(node.module)
            for alias in node.names:
                if alias.name == "*":
                    continue
                full = f"{node.module}.{alias.name}"
                self.state.imports[alias.asname or alias.name] = full
                modules.append(full)
        for module in modules:
            top = module.split(".")[0]
            self.state.import_sites.setdefault(top, (self.cell.index, line))
            for gpu_module in GPU_ONLY_MODULES | GPU_OPTIONAL_MODULES:
                if module == gpu_module or module.startswith(gpu_module + "."):
                    self.state.gpu_imports.setdefault(
                        gpu_module, (self.cell.index, line, self.try_depth > 0)
                    )

    # assignments: widgets ------------------------------------------------------------
    def visit_assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call):
            name = self.resolver.qualname(node.value.func) or ""
            if name.startswith("ipywidgets.") and name.rsplit(".", 1)[-1] in INPUT_WIDGETS:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.state.widget_vars[target.id] = name.rsplit(".", 1)[-1]

    def visit_attribute(self, node: ast.Attribute) -> None:
        if (
            isinstance(node.value, ast.Name)
            and node.value.id in self.state.widget_vars
            and node.attr in WIDGET_READ_ATTRIBUTES
            and node.value.id not in self.state.widget_flagged
        ):
            var = node.value.id
            self.state.widget_flagged.add(var)
            kind = self.state.widget_vars[var]
            self.state.add(
                Severity.WARNING,
                "interactive-widget",
                f"cell {self.cell.index}, line {self.line(node)}: `{var}.{node.attr}` uses the "
                f"{kind} widget `{var}` for input; in an unattended job nobody can change it, so "
                "the job only ever sees its initial value",
                f"make the value a parameter: tag a cell `{PARAMETERS_TAG}`, assign it there "
                f"(e.g. `{var}_value = ...`), use that instead of `{var}.value`, and tag the "
                f"widget cells `{SKIP_TAG}`",
                self.cell.index,
                self.line(node),
            )

    def visit_decorator(self, node: ast.expr) -> None:
        if isinstance(node, ast.Call):
            return  # @interact(x=...) is a call: visit_call reports it
        name = self.resolver.qualname(node) or ""
        if name.startswith("ipywidgets.") and name.rsplit(".", 1)[-1] in WIDGET_INTERACT:
            self._interact_finding(node, f"@{name.rsplit('.', 1)[-1]}")

    def _interact_finding(self, node: ast.AST, what: str) -> None:
        self.state.add(
            Severity.WARNING,
            "interactive-widget",
            f"cell {self.cell.index}, line {self.line(node)}: {what} builds interactive "
            "controls; an unattended job has no one to move them, so the function runs at most "
            "once with its default values",
            f"call the function directly with the values you want, taken from a cell tagged "
            f"`{PARAMETERS_TAG}`, and tag the interactive cell `{SKIP_TAG}`",
            self.cell.index,
            self.line(node),
        )

    # calls ---------------------------------------------------------------------------
    def visit_call(self, node: ast.Call) -> None:
        if _ipython_call(node):
            return  # magics are handled from our own transform of the raw cell
        state = self.state
        name = self.resolver.qualname(node.func)
        attr = node.func.attr if isinstance(node.func, ast.Attribute) else None
        cell, line = self.cell.index, self.line(node)

        if name in ("input", "getpass.getpass", "sys.stdin.read", "sys.stdin.readline"):
            if not (name == "input" and "input" in state.defined_names):
                shown = {"getpass.getpass": "getpass()"}.get(name, f"{name}()")
                state.add(
                    Severity.ERROR,
                    "input-call",
                    f"cell {cell}, line {line}: {shown} waits for someone to type an answer; "
                    "a job has no one to answer, so it fails or hangs here",
                    "make the value a parameter: tag a cell `parameters` and assign it there "
                    "(pass it with `--param NAME=VALUE`); for passwords and tokens read "
                    "os.environ['NAME'] and pass `--env NAME=...` at submit time",
                    cell,
                    line,
                )
        if name and name.startswith("ipywidgets.") and name.rsplit(".", 1)[-1] in WIDGET_INTERACT:
            self._interact_finding(node, f"{name.rsplit('.', 1)[-1]}()")
        if name in ("sys.exit", "exit", "quit", "os._exit") and self.function_depth == 0:
            if name == "sys.exit" or name == "os._exit" or name not in state.defined_names:
                state.display_calls.append((cell, line, f"exit:{name}"))
        if name in ("display", "IPython.display.display") and "display" not in state.defined_names:
            state.display_calls.append((cell, line, "display()"))
        if name == "matplotlib.pyplot.show":
            state.display_calls.append((cell, line, "plt.show()"))
        if name in ("os.chdir",) and node.args and self.function_depth == 0:
            self.chdir(self.resolver.text(node.args[0]), line, "os.chdir()")
        self.check_cuda(node, name, attr, line)
        self.check_reads(node, name, attr, line)
        self.check_writes(node, name, attr, line)

    def check_cuda(self, node: ast.Call, name: str | None, attr: str | None, line: int) -> None:
        hit = None
        if attr == "cuda" and not node.args:
            hit = ".cuda()"
        for keyword in node.keywords:
            value = _const_str(keyword.value)
            if keyword.arg == "device" and value and value.startswith("cuda"):
                hit = f'device="{value}"'
        first = _const_str(node.args[0]) if node.args else None
        if first and first.startswith("cuda") and (attr == "to" or (name or "").endswith("device")):
            hit = f'{attr or name}("{first}")'
        if hit:
            self.state.cuda_calls.append((self.cell.index, line, hit))

    def _argument(
        self, node: ast.Call, position: int, keywords: tuple[str, ...]
    ) -> ast.expr | None:
        for keyword in node.keywords:
            if keyword.arg in keywords:
                return keyword.value
        if len(node.args) > position and not any(
            isinstance(a, ast.Starred) for a in node.args[: position + 1]
        ):
            return node.args[position]
        return None

    def _mode(self, node: ast.Call, position: int | None, default: str) -> str | None:
        expr = self._argument(node, position, ("mode",)) if position is not None else None
        if expr is None:
            for keyword in node.keywords:
                if keyword.arg == "mode":
                    expr = keyword.value
        if expr is None:
            return default
        return _const_str(expr)

    def check_reads(self, node: ast.Call, name: str | None, attr: str | None, line: int) -> None:
        path_expr: ast.expr | None = None
        what = f"{name or attr}()"
        if name in _OPEN_LIKE:
            position, keywords, mode_position, default = _OPEN_LIKE[name]
            mode = self._mode(node, mode_position, default)
            if mode is None or any(ch in mode for ch in "wax"):
                return
            path_expr = self._argument(node, position, keywords)
        elif name in _READ_FUNCTIONS:
            position, keywords = _READ_FUNCTIONS[name]
            path_expr = self._argument(node, position, keywords)
        elif attr and attr.startswith("read_") and attr[5:] in _READ_METHOD_SUFFIXES:
            path_expr = self._argument(node, 0, _READ_METHOD_KEYWORDS)
            what = f"{attr}()"
        elif attr == "imread":
            path_expr = self._argument(node, 0, ("fname", "filename", "uri"))
            what = "imread()"
        elif attr in ("read_text", "read_bytes") and not node.args:
            path_expr = node.func.value if isinstance(node.func, ast.Attribute) else None
            what = f".{attr}()"
        elif attr == "open" and isinstance(node.func, ast.Attribute):
            # Path(...).open(): the receiver is a path expression, not a module
            mode = self._mode(node, 0, "r")
            if mode is None or any(ch in mode for ch in "wax"):
                return
            path_expr = node.func.value
            what = ".open()"
        if path_expr is None:
            return
        used: list[str] = []
        text = self.resolver.text(path_expr, used)
        if text is None or not _looks_like_path(text) or _is_url(text):
            return
        self.record_read(text, line, tuple(dict.fromkeys(used)), what)

    def record_read(self, text: str, line: int, via: tuple[str, ...], what: str) -> None:
        cwd = self.state.cwd
        if _is_absolute(text):
            path = text
        elif cwd is None:
            return  # relative to a working folder we could not follow
        else:
            path = _join_cwd(cwd, text)
        self.state.reads.append(
            _Read(self.cell.index, line, text, path, via, self.function_depth > 0, what)
        )

    def check_writes(self, node: ast.Call, name: str | None, attr: str | None, line: int) -> None:
        targets: list[ast.expr] = []
        if name in _OPEN_LIKE:
            position, keywords, mode_position, default = _OPEN_LIKE[name]
            mode = self._mode(node, mode_position, default)
            if mode is not None and any(ch in mode for ch in "wax"):
                expr = self._argument(node, position, keywords)
                targets += [expr] if expr is not None else []
        elif name in _WRITE_FUNCTIONS:
            position, keywords = _WRITE_FUNCTIONS[name]
            expr = self._argument(node, position, keywords)
            targets += [expr] if expr is not None else []
        elif attr and attr.startswith("to_") and attr[3:] in _WRITE_METHOD_SUFFIXES:
            expr = self._argument(node, 0, _WRITE_KEYWORDS)
            targets += [expr] if expr is not None else []
        elif attr in _WRITE_METHODS:
            expr = self._argument(node, _WRITE_METHODS[attr], _WRITE_KEYWORDS)
            targets += [expr] if expr is not None else []
        elif attr in ("write_text", "write_bytes", "touch", "mkdir") and isinstance(
            node.func, ast.Attribute
        ):
            targets.append(node.func.value)
        elif attr == "open" and isinstance(node.func, ast.Attribute):
            mode = self._mode(node, 0, "r")
            if mode is not None and any(ch in mode for ch in "wax"):
                targets.append(node.func.value)
        for keyword in node.keywords:
            if keyword.arg in _WRITE_ONLY_KEYWORDS:
                targets.append(keyword.value)
        for target in targets:
            text = self.resolver.text(target)
            pattern = False
            if text is None:
                text, pattern = self.resolver.text(target, wild=True), True
            if text is None or not _looks_like_path(text) or _is_url(text):
                continue
            self.record_write(text, line, pattern=pattern, from_python=True)

    def record_write(self, text: str, line: int, *, pattern: bool, from_python: bool) -> None:
        cwd = self.state.cwd
        if _is_absolute(text) or cwd is None:
            return
        path = _join_cwd(cwd, text)
        if pattern and len(re.sub(r"[*/.]", "", path)) < 3:
            return  # too vague to say which file it is
        self.state.writes.append(
            _Write(
                self.cell.index,
                line,
                path,
                pattern,
                # convert may turn %%writefile into open(..., "w"): still a helper, not output
                from_python and not pattern and self.cell.index not in self.state.writefile_cells,
                self.function_depth > 0,
            )
        )

    def chdir(self, target: str | None, line: int, what: str) -> None:
        state = self.state
        if target is None:
            state.cwd = None
            return
        target = target.strip().strip("'\"")
        if target in ("", "~") or target == "-":
            state.cwd = None
            return
        if _is_absolute(target):
            state.cwd = None
            # /tmp exists everywhere; anything else is this machine's layout
            if not target.startswith("/tmp"):  # noqa: S108
                state.add(
                    Severity.WARNING,
                    "absolute-chdir",
                    f"cell {self.cell.index}, line {line}: {what} changes the working folder "
                    f"to the absolute path {target}, which will not exist in the job",
                    "use a folder relative to the notebook (and `--include` it), or make the "
                    "path a parameter: tag a cell `parameters` and assign it there",
                    self.cell.index,
                    line,
                    target,
                )
            return
        if state.cwd is not None:
            state.cwd = _join_cwd(state.cwd, target)


# ---------------------------------------------------------------------- magic events


def _magic_events(visitor: _CellVisitor, cell: _Cell) -> list[tuple[int, Callable[[], None]]]:
    """%cd, %run, %load and %%writefile in the cell, as ordered callbacks."""
    events: list[tuple[int, Callable[[], None]]] = []
    tree = cell.magic_tree
    if tree is None:
        return events
    for node in ast.walk(tree):
        call = _ipython_call(node)
        if not call:
            continue
        method, args = call
        line = cell.magic_line_of(getattr(node, "lineno", 1))
        magic = _const_str(args[0]) if args else None
        argument = _const_str(args[1]) if len(args) > 1 else None
        if magic is None or argument is None:
            continue
        argument = argument.strip()
        if method == "run_line_magic" and magic == "cd":

            def cd(argument: str = argument, line: int = line) -> None:
                target = argument
                if target.startswith("-b ") or target == "-":
                    visitor.state.cwd = None
                    return
                resolved = _expand_magic_text(visitor.state, target)
                visitor.chdir(resolved, line, f"%cd {target}")

            events.append((line, cd))
        elif method == "run_line_magic" and magic in ("run", "load"):
            words = _split_words(argument)
            if not words or words[0].startswith("-"):
                continue  # %run -m module, %run -i ...: not a plain file
            file_name = words[0]

            def run(file_name: str = file_name, line: int = line, magic: str = magic) -> None:
                text = _expand_magic_text(visitor.state, file_name)
                if text is not None and not _is_url(text):
                    visitor.record_read(text, line, (), f"%{magic}")

            events.append((line, run))
        elif method == "run_cell_magic" and magic in WRITEFILE_MAGICS:
            words = [w for w in _split_words(argument) if not w.startswith("-")]
            if not words:
                continue
            target_text = words[0]
            visitor.state.writefile_cells.add(cell.index)

            def writefile(target_text: str = target_text, line: int = line) -> None:
                text = _expand_magic_text(visitor.state, target_text)
                pattern = False
                if text is None:
                    text, pattern = re.sub(r"\{[^{}]*\}|\$\w+", "*", target_text), True
                visitor.record_write(text, line, pattern=pattern, from_python=False)

            events.append((line, writefile))
    return events


def _split_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _expand_magic_text(state: _State, text: str) -> str | None:
    """IPython expands {name} and $name in magic arguments; do it from known constants."""
    unknown = False

    def value(name: str) -> str:
        nonlocal unknown
        if name in state.env:
            return state.env[name][0]
        unknown = True
        return ""

    expanded = re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)), text)
    expanded = re.sub(r"\$(\w+)", lambda m: value(m.group(1)), expanded)
    return None if unknown else expanded


# --------------------------------------------------------------------- shell escapes


@dataclass
class _ShellCommand:
    line: int
    command: str
    kind: str  # "escape" (!cmd), "assign" (x = !cmd), "magic" (%sx), "cell" (%%bash)


_ASSIGN_ESCAPE = re.compile(r"^\s*[A-Za-z_][\w.\[\]'\", ]*=\s*!(.*)$")
_SX_MAGIC = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\s*=\s*)?%(?:sx|system)\b(.*)$")


def _shell_commands(raw: str) -> list[_ShellCommand]:
    lines = raw.splitlines()
    if not lines:
        return []
    first = lines[0].strip()
    offset = 0
    if first.startswith("%%"):
        words = first[2:].split()
        magic = words[0] if words else ""
        if magic in SHELL_CELL_MAGICS:
            if magic == "script" and not (words[1:] and words[1] in ("bash", "sh", "zsh")):
                return []
            body = "\n".join(lines[1:])
            return [_ShellCommand(1, body, "cell")] if body.strip() else []
        if magic not in PYTHON_BODY_CELL_MAGICS:
            return []  # %%writefile, %%bigquery, %%R, %%html...: not Python, not shell
        offset = 1
    commands: list[_ShellCommand] = []
    in_string: str | None = None
    index = offset
    while index < len(lines):
        line = lines[index]
        stripped = line.lstrip()
        if in_string is None:
            match_assign = _ASSIGN_ESCAPE.match(line)
            match_sx = _SX_MAGIC.match(line)
            kind, command = None, ""
            if stripped.startswith("!"):
                kind, command = "escape", stripped.lstrip("!")
            elif match_assign and not stripped.startswith(("#", "%")) and "==" not in line:
                kind, command = "assign", match_assign.group(1)
            elif match_sx:
                kind, command = "magic", match_sx.group(1)
            if kind:
                start = index
                while command.rstrip().endswith("\\") and index + 1 < len(lines):
                    index += 1
                    command = command.rstrip()[:-1] + " " + lines[index].strip()
                commands.append(_ShellCommand(start + 1, command.strip(), kind))
                index += 1
                continue
        # follow triple-quoted strings, so "!" inside a docstring is not taken for a command
        for quote in re.findall(r'"""|\'\'\'', line):
            if in_string is None:
                in_string = quote
            elif in_string == quote:
                in_string = None
        index += 1
    return commands


# Shell words that only introduce the command after them.
_SHELL_LEAD_WORDS = frozenset({"if", "then", "else", "elif", "while", "until", "do", "!", "{"})
# Shell words that start something that is not a tool run: tests, loop headers, builtins.
_SHELL_NON_TOOLS = frozenset(
    {
        "[", "[[", "for", "case", "select", "test", "fi", "done", "esac", "}", "set",
        "export", "exit", "break", "continue", "return", "local", "true", "false", "shift",
        "trap", "wait", "source", ".", "unset", "readonly", "declare", "function", "in", ":",
    }
)  # fmt: skip


def _split_commands(text: str) -> list[str]:
    """Split shell text on unquoted newlines, `;`, `&&`, `||` and `|`."""
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                current.append(char)
                index += 1
                char = text[index] if index < len(text) else ""
            current.append(char)
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "\\" and text[index + 1 : index + 2] == "\n":
            index += 1  # a continued line
            current.append(" ")
        elif char == "#" and (not current or current[-1].isspace()):
            while index < len(text) and text[index] != "\n":
                index += 1
            continue
        elif char in ";\n|&":
            if char == "&" and text[index + 1 : index + 2] != "&":
                current.append(char)  # `cmd &` or `2>&1`: not a separator
            else:
                parts.append("".join(current))
                current = []
                if text[index + 1 : index + 2] == char:
                    index += 1
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _segments(command: str) -> list[list[str]]:
    """Simple commands of a shell line or script, each as its words (best effort)."""
    result: list[list[str]] = []
    for part in _split_commands(command):
        words = _split_words(part)
        while words:
            if words[0] in _SHELL_NON_TOOLS:
                words = []
            elif (
                re.match(r"^\w+=", words[0])
                or words[0] in COMMAND_PREFIXES
                or words[0] in _SHELL_LEAD_WORDS
            ):
                words = words[1:]
            else:
                break
        if words and not words[0].startswith(("#", "$(", "(", ")")):
            result.append(words)
    return result


def _tool(words: list[str]) -> str:
    tool = posixpath.basename(words[0])
    if re.match(r"^python[\d.]*$", tool) and words[1:3] == ["-m", "pip"]:
        return "pip"
    return "pip" if tool == "pip3" else tool


def _shell_products(words: list[str], cwd: str) -> list[str]:
    """Files or folders a simple shell command creates (best effort)."""
    tool = _tool(words)
    args = words[1:]
    products: list[str] = []
    for i, word in enumerate(words):  # redirections: `> file`, `>> file`
        if word in (">", ">>") and i + 1 < len(words):
            products.append(words[i + 1])
        elif word.startswith(">") and len(word) > 2 and word[1] != "&":
            products.append(word.lstrip(">"))
    plain: list[str] = []
    skip_next = False
    for i, word in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        if word in _OUTPUT_OPTIONS.get(tool, ()):
            if i + 1 < len(args):
                products.append(args[i + 1])
            skip_next = True
            continue
        if word.startswith("-") or word in (">", ">>"):
            continue
        plain.append(word)
    urls = [w for w in plain if _is_url(w)]
    if tool in ("wget", "curl", "gdown") or (tool in COPY_TOOLS and plain):
        products += [posixpath.basename(u.rstrip("/").split("?")[0]) for u in urls]
    if tool in COPY_TOOLS and len(plain) >= 2:
        products.append(plain[-1])
    if tool in EXTRACT_TOOLS:
        products += [_strip_archive_suffix(posixpath.basename(w)) for w in plain]
    if tool == "git" and plain[:1] == ["clone"] and len(plain) >= 2:
        repository = posixpath.basename(plain[1].rstrip("/"))
        products.append(plain[2] if len(plain) >= 3 else repository.removesuffix(".git"))
    if tool == "touch":
        products += plain
    result = []
    for product in products:
        if not product or "$" in product or "{" in product or _is_url(product):
            continue
        if _is_absolute(product):
            continue
        normalized = _join_cwd(cwd, product)
        if normalized and normalized != ".." and not normalized.startswith("../"):
            result.append(normalized)
    return result


def _check_shell(state: _State, cell: _Cell) -> None:
    for command in _shell_commands(cell.raw):
        segments = _segments(command.command)
        if not segments:
            continue
        tools: list[str] = []
        network: list[str] = []
        missing: list[str] = []
        pip_install = False
        for words in segments:
            tool = _tool(words)
            tools.append(tool)
            rest = words[1:]
            if tool == "pip":
                pip_install = pip_install or "install" in rest
                continue
            if tool == "git":
                if any(w in GIT_NETWORK_SUBCOMMANDS for w in rest[:1]):
                    network.append("git " + rest[0])
            elif tool in NETWORK_TOOLS:
                network.append(tool)
            if tool in NOT_IN_IMAGE_TOOLS:
                missing.append(tool)
            if state.cwd is not None:
                for product in _shell_products(words, state.cwd):
                    state.writes.append(_Write(cell.index, command.line, product, False, False))
        unique_tools = list(dict.fromkeys(tools))
        where = f"cell {cell.index}, line {command.line}"
        shown = {
            "escape": "`!{}`",
            "assign": "`x = !{}`",
            "magic": "`%sx {}`",
            "cell": "the shell cell running {}",
        }[command.kind].format(
            ", ".join(unique_tools) if command.kind == "cell" else unique_tools[0] + " …"
        )
        if network or missing:
            problems = []
            if network:
                problems.append(f"needs network access ({', '.join(dict.fromkeys(network))})")
            if missing:
                problems.append(
                    f"uses {', '.join(dict.fromkeys(missing))}, which is probably not "
                    "installed in the job image"
                )
            state.add(
                Severity.WARNING,
                "shell-escape",
                f"{where}: {shown} {' and '.join(problems)}",
                "do this before submitting (or in Python with a library the job installs), or "
                "use a base image that has the tool and a backend with network access; tag the "
                f"cell `{SKIP_TAG}` if the job does not need it",
                cell.index,
                command.line,
            )
        elif pip_install and set(unique_tools) <= {"pip"}:
            state.add(
                Severity.INFO,
                "shell-escape",
                f"{where}: {shown} installs packages; they become the job's requirements and "
                "are installed when the image is built",
                "nothing to do; pin versions on the line if the job needs exact ones",
                cell.index,
                command.line,
            )
        else:
            state.add(
                Severity.INFO,
                "shell-escape",
                f"{where}: {shown} runs {', '.join(unique_tools)} in the job's shell",
                f"make sure {', '.join(unique_tools)} exists in the job image, or tag the cell "
                f"`{SKIP_TAG}` if the job does not need it",
                cell.index,
                command.line,
            )


# --------------------------------------------------------------------------- secrets


def _check_secrets(state: _State, cell: _Cell) -> None:
    seen: set[int] = set()
    lines = cell.raw.splitlines()
    for number, text in enumerate(lines, start=1):
        for pattern, what, env_name in _SECRET_PATTERNS:
            match = pattern.search(text)
            if not match:
                continue
            secret = match.group(match.lastindex or 0)
            if "example" in secret.lower() or number in seen:
                continue
            seen.add(number)
            shown = (
                _mask(secret) if "PRIVATE KEY" not in secret else "-----BEGIN … PRIVATE KEY-----"
            )
            _secret_finding(state, cell.index, number, f"{what} ({shown})", env_name)
    if cell.tree is None:
        return
    for node in ast.walk(cell.tree):
        pairs: list[tuple[str, ast.AST]] = []
        if isinstance(node, ast.Assign):
            for target in node.targets:
                pairs.append((_target_name(target), node.value))
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            pairs.append((_target_name(node.target), node.value))
        elif isinstance(node, ast.Call):
            pairs += [(k.arg or "", k.value) for k in node.keywords]
        elif isinstance(node, ast.Dict):
            pairs += [
                (_const_str(k) or "", v)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            ]
        for name, value_node in pairs:
            value = _const_str(value_node)
            if not name or value is None or not _SECRET_NAME.search(name):
                continue
            if not _looks_like_secret_value(value):
                continue
            line = cell.line_of(getattr(value_node, "lineno", 1))
            if line in seen:
                continue
            seen.add(line)
            env_name = re.sub(r"\W", "_", name).upper()
            _secret_finding(
                state,
                cell.index,
                line,
                f"a hard-coded secret in `{name}` ({_mask(value)})",
                env_name,
            )


def _target_name(target: ast.AST) -> str:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Subscript):
        return _const_str(target.slice) or ""
    return ""


def _secret_finding(state: _State, cell: int, line: int, what: str, env_name: str) -> None:
    state.add(
        Severity.ERROR,
        "secret",
        f"cell {cell}, line {line}: {what} is written in the notebook; it would be copied into "
        "the job's image and script",
        f"delete it from the notebook (and revoke it if the notebook was shared); read it with "
        f"os.environ['{env_name}'] and pass it at submit time with `--env {env_name}=...` from "
        "your secret store or environment",
        cell,
        line,
    )


# ----------------------------------------------------------------- notebook-wide checks


def _check_execution_order(
    state: _State, nb: nbformat.NotebookNode, cells: list[int], comment_only: set[int]
) -> None:
    counts: list[tuple[int, int | None]] = []
    for index in cells:
        count = nb.cells[index].get("execution_count")
        counts.append((index, count if isinstance(count, int) else None))
    executed: list[tuple[int, int]] = [(i, c) for i, c in counts if c is not None]
    if not counts:
        return
    if not executed:
        state.add(
            Severity.INFO,
            "never-run",
            "the notebook has never been run here (or its outputs were cleared): the job will "
            "be its first full run, top to bottom",
            "run it top to bottom here first (Kernel > Restart Kernel and Run All Cells) to "
            "catch errors before they cost job time",
        )
        return
    out_of_order = [
        (executed[k + 1][0], executed[k + 1][1], executed[k][0], executed[k][1])
        for k in range(len(executed) - 1)
        if executed[k + 1][1] <= executed[k][1]
    ]
    if out_of_order:
        cell, count, above, above_count = out_of_order[0]
        more = f" ({len(out_of_order)} places in all)" if len(out_of_order) > 1 else ""
        state.add(
            Severity.WARNING,
            "execution-order",
            f"cells ran out of order: cell {cell} (execution count [{count}]) ran before cell "
            f"{above} above it ([{above_count}]){more}; the job runs top to bottom, so results "
            "that depended on that order may differ",
            "restart the kernel and run all cells top to bottom here to confirm the notebook "
            "works in that order",
            cell,
        )
    never = [i for i, c in counts if c is None and i not in comment_only]
    if never:
        listed = ", ".join(str(i) for i in never[:8]) + (" …" if len(never) > 8 else "")
        state.add(
            Severity.WARNING,
            "execution-order",
            f"{len(never)} code cell(s) never ran here while others did (cells {listed}); the "
            "job runs them, and the state you saw did not include them",
            "restart the kernel and run all cells top to bottom here, or tag cells the job "
            f"must not run `{SKIP_TAG}`",
            never[0],
        )


def _check_files(state: _State, include: list[str]) -> None:
    included = [_normalize(i.rstrip("/")) for i in include]
    written_exact: dict[str, list[_Write]] = {}
    for write in state.writes:
        if not write.pattern:
            written_exact.setdefault(write.path, []).append(write)
    flagged: set[str] = set()
    for read in state.reads:
        if read.path in flagged:
            continue
        if _is_absolute(read.path):
            _absolute_read(state, read, flagged)
            continue
        if _covered(read.path, included):
            continue
        if read.what.startswith("%") and (state.notebook_dir / read.path).is_file():
            continue  # %run / %load files beside the notebook are packed with the job
        earlier = [
            w
            for w in state.writes
            if (w.cell, w.line) <= (read.cell, read.line) or w.in_function
            if _write_covers(w, read.path)
        ]
        if earlier:
            continue
        later = [w for w in state.writes if _write_covers(w, read.path)]
        if later and read.in_function:
            continue  # the function may well be called after the write
        flagged.add(read.path)
        where = f"cell {read.cell}, line {read.line}: {read.what} reads {read.path}"
        if read.written != read.path:
            where += f" (written `{read.written}`)"
        parameter = next((v for v in read.via if v in state.parameter_names), None)
        param_fix = (
            f", or pass another path when submitting (`--param {parameter}=...`)"
            if parameter
            else ", or make it a parameter: tag a cell `parameters` and assign the path there"
        )
        if later:
            first = later[0]
            message = (
                f"{where}, but the notebook only writes it later (cell {first.cell}); in a "
                "top-to-bottom run it will not exist yet"
            )
            fix = "move the cell that writes it above this one, or include the file"
        elif read.path.startswith("../"):
            message = (
                f"{where}, which is outside the notebook's folder and is not sent with the job"
            )
            fix = "copy the file beside the notebook and add `--include` for it" + param_fix
        elif (state.notebook_dir / read.path).exists():
            message = f"{where}, which exists beside the notebook but is not sent with the job"
            fix = f"add `--include {read.path}` (it exists beside the notebook)" + param_fix
        else:
            message = f"{where}, and the file is missing even here, so the job will not have it"
            fix = (
                f"put the file at {read.path} beside the notebook and add "
                f"`--include {read.path}`" + param_fix
            )
        state.add(Severity.WARNING, "local-file", message, fix, read.cell, read.line, read.path)
    _check_outputs(state)


def _write_covers(write: _Write, path: str) -> bool:
    if write.pattern:
        return fnmatch.fnmatchcase(path, write.path)
    return path == write.path or path.startswith(write.path + "/")


def _absolute_read(state: _State, read: _Read, flagged: set[str]) -> None:
    if not _is_home_like(read.path):
        return  # /tmp, /etc, mounted volumes: may well exist in the job
    flagged.add(read.path)
    notebook_dir = str(state.notebook_dir.resolve())
    relative_fix = ""
    if read.path.startswith(notebook_dir + "/"):
        relative = read.path[len(notebook_dir) + 1 :]
        relative_fix = f"use the relative path {relative} and add `--include {relative}`, or "
    state.add(
        Severity.WARNING,
        "absolute-path",
        f"cell {read.cell}, line {read.line}: {read.what} reads the absolute path {read.path}, "
        "which exists only on this machine, not in the job",
        f"{relative_fix}make the path a parameter: tag a cell `parameters`, assign it there and "
        "pass the job's path with `--param NAME=...`",
        read.cell,
        read.line,
        read.path,
    )


def _check_outputs(state: _State) -> None:
    outputs = [w for w in state.writes if w.from_python and not w.path.startswith("../")]
    if not outputs:
        return
    names = list(dict.fromkeys(w.path for w in outputs))
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    first = outputs[0]
    state.add(
        Severity.INFO,
        "output-location",
        f"cell {first.cell}, line {first.line}: the notebook writes {listed} into its working "
        "folder; in a job that folder is not kept, only the outputs folder is",
        f"to get files back, write them under os.environ['{OUTPUT_DIR_ENV}'] (e.g. "
        f"os.path.join(os.environ.get('{OUTPUT_DIR_ENV}', '.'), 'result.csv'))",
        first.cell,
        first.line,
        first.path,
    )


def _check_gpu(state: _State, resources: Resources) -> None:
    if resources.gpus > 0:
        return
    for module, (cell, line, in_try) in sorted(state.gpu_imports.items(), key=lambda i: i[1]):
        if module in GPU_ONLY_MODULES:
            # GPU-only libraries fail at import or at first use without an NVIDIA GPU; an
            # import inside try/except usually has a CPU fallback, so it only warns then.
            severity = Severity.WARNING if in_try else Severity.ERROR
            message = (
                f"cell {cell}, line {line}: {module} needs an NVIDIA GPU, and the job requests none"
            )
        else:
            severity = Severity.WARNING
            message = (
                f"cell {cell}, line {line}: {module} is imported but the job requests no GPU; "
                f"{module} will run on CPU, slowly"
            )
        state.add(
            severity,
            "gpu-not-requested",
            message,
            "request one with `--gpus 1` (and a backend or profile that has GPUs), or ignore "
            "this if the CPU is enough",
            cell,
            line,
        )
    # An unguarded .cuda() / device="cuda" raises at once on a machine without a GPU (torch:
    # "Torch not compiled with CUDA" / "no CUDA GPUs are available"), so the job is sure to
    # fail: an error. A notebook that checks torch.cuda.is_available() adapts, so it is skipped.
    if state.cuda_calls and not state.cuda_guarded:
        cell, line, what = state.cuda_calls[0]
        state.add(
            Severity.ERROR,
            "cuda-without-gpu",
            f"cell {cell}, line {line}: {what} needs a CUDA GPU, and the job requests none; it "
            "will fail there",
            "request one with `--gpus 1`, or pick the device with "
            "`'cuda' if torch.cuda.is_available() else 'cpu'`",
            cell,
            line,
        )


def _check_display_and_exit(state: _State) -> None:
    exits = [c for c in state.display_calls if c[2].startswith("exit:")]
    for cell, line, what in exits:
        if cell >= state.last_cell:
            continue  # exiting in the last cell ends the job where it would end anyway
        name = what.split(":", 1)[1]
        state.add(
            Severity.WARNING,
            "early-exit",
            f"cell {cell}, line {line}: {name}() ends the job here; the cells after it never run",
            f"remove the call, or move the cells after it into cells tagged `{SKIP_TAG}`",
            cell,
            line,
        )
    shows = [c for c in state.display_calls if not c[2].startswith("exit:")]
    if not shows:
        return
    counts: dict[str, int] = {}
    for _, _, what in shows:
        counts[what] = counts.get(what, 0) + 1
    described = " and ".join(
        f"{what} ({n} call{'s' if n > 1 else ''})" for what, n in counts.items()
    )
    cell, line, _ = shows[0]
    state.add(
        Severity.INFO,
        "display-output",
        f"cell {cell}, line {line}: {described} show nothing in a job: display() prints a text "
        "form to the job's log, and figures are not shown or kept",
        f"save what you need to see: fig.savefig(os.path.join(os.environ['{OUTPUT_DIR_ENV}'], "
        "'figure.png')), df.to_csv(...) likewise",
        cell,
        line,
    )


def _check_unresolved(state: _State, unresolved: list[str]) -> None:
    for name in dict.fromkeys(unresolved):
        site = state.import_sites.get(name.split(".")[0])
        cell, line = site if site else (None, None)
        where = f"cell {cell}, line {line}: " if site else ""
        state.add(
            Severity.WARNING,
            "unresolved-import",
            f"{where}`import {name}`: no installed distribution in the kernel's environment "
            "provides it, so the job cannot install it",
            f"install the package that provides {name} in the kernel environment (e.g. "
            "`%pip install ...` in the notebook), or add it to requirements.txt beside the "
            f"notebook; if {name} is your own module, put it beside the notebook",
            cell,
            line,
        )


# ------------------------------------------------------------------------- entry point


def _analysed_cells(
    nb: nbformat.NotebookNode, cell_sources: dict[int, str] | None
) -> Iterator[_Cell]:
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        raw = _cell_source(cell)
        tags = _cell_tags(cell)
        if SKIP_TAG in tags or _uses_cloud_magic(raw) or not raw.strip():
            continue
        own = _transform(raw)
        magic_tree = _parse(own)
        magic_line_of = _line_mapper(raw, own) if own is not None else (lambda line: line)
        source = own if cell_sources is None else cell_sources.get(index, own)
        tree, line_of = _unwrap(raw, source)
        yield _Cell(index, raw, tree, line_of, magic_tree, magic_line_of, PARAMETERS_TAG in tags)


def check_notebook(
    nb: nbformat.NotebookNode,
    notebook_dir: Path,
    *,
    resources: Resources | None = None,
    include: list[str] | None = None,
    cell_sources: dict[int, str] | None = None,
    unresolved_imports: list[str] | None = None,
    saved: bool | None = None,
) -> list[Finding]:
    """Readiness findings for running `nb` unattended, most severe first.

    notebook_dir is the folder the notebook lives in (relative paths are looked up there).
    resources None means the defaults (no GPU). include lists notebook-relative files and
    folders sent with the job. cell_sources maps an index into nb.cells to that code cell's
    Python after IPython syntax was handled. unresolved_imports are import names resolve
    could not map to a distribution. saved=False means the editor has unsaved changes.
    The notebook object is only read.
    """
    state = _State(notebook_dir=Path(notebook_dir))
    resources = resources or Resources()
    cells = list(_analysed_cells(nb, cell_sources))

    if saved is False:
        state.add(
            Severity.ERROR,
            "unsaved",
            "the notebook has unsaved changes; the job would run the last saved version",
            "save the notebook first (File > Save, or Ctrl+S / Cmd+S), then promote it again",
        )
    if not cells:
        skipped = any(
            c.get("cell_type") == "code" and SKIP_TAG in _cell_tags(c) and _cell_source(c).strip()
            for c in nb.cells
        )
        state.add(
            Severity.ERROR,
            "empty-notebook",
            "the notebook has no code to run"
            + (f" (every code cell is tagged `{SKIP_TAG}`)" if skipped else ""),
            "add code cells"
            + (
                f", or remove the `{SKIP_TAG}` tag from the cells the job should run"
                if skipped
                else ""
            ),
        )
        return _sorted(state.findings)

    state.last_cell = cells[-1].index
    for cell in cells:
        if cell.tree is not None:
            state.defined_names |= _user_defined(cell.tree) & {"input", "display", "exit", "quit"}
            if cell.is_parameters:
                state.parameter_names |= {
                    t.id
                    for s in cell.tree.body
                    if isinstance(s, ast.Assign)
                    for t in s.targets
                    if isinstance(t, ast.Name)
                }

    for cell in cells:
        visitor = _CellVisitor(state, cell)
        events = _magic_events(visitor, cell)
        _check_shell(state, cell)
        if cell.tree is not None:
            visitor.run(cell.tree, events)
        else:
            for _, event in sorted(events, key=lambda e: e[0]):
                event()
        _check_secrets(state, cell)

    # a cell of only comments does nothing, whether it ran or not
    comment_only = {c.index for c in cells if c.tree is not None and not c.tree.body}
    _check_execution_order(state, nb, [c.index for c in cells], comment_only)
    _check_files(state, include or [])
    _check_gpu(state, resources)
    _check_display_and_exit(state)
    _check_unresolved(state, unresolved_imports or [])
    return _sorted(state.findings)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(
        findings,
        key=lambda f: (
            -f.severity.rank,
            -1 if f.cell is None else f.cell,
            f.line or 0,
            f.code,
            f.message,
        ),
    )
