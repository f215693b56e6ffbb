"""Convert a notebook into a plain Python script that runs unattended.

Every code cell goes through IPython's own input transformer, so `%magic`, `%%cellmagic`,
`!cmd`, `x = !cmd` and `obj?` become calls on `get_ipython()` exactly as IPython would run
them. Those calls are found with `ast` and only their source segments are replaced with plain
Python; the user's code, comments and formatting stay as written everywhere else. The rewritten
cells then go through nbconvert's PythonExporter, with a template that neither re-transforms
the code nor adds prompts.

Choices a reader should know about:
- A `!cmd` that exits non-zero fails the job (IPython only prints the status); the job log is
  the only witness of an unattended run, so silent failures are worse than loud ones.
- A cell with top-level `await` runs inside `asyncio.run()` of an async function that declares
  the cell's names global, so it compiles and its names stay visible to later cells.
- `%pip install` and friends are not run: their packages go into `pip_requirements`, which the
  build installs into the image, so the job needs no network for them.
- The parameters cell is followed by code that reads overrides from $CLOUDPROMOTE_PARAMETERS,
  so the script is byte-identical whatever the values (the image can be cached) and still runs
  standalone with the defaults.
"""

from __future__ import annotations

import ast
import builtins
import copy
import inspect
import io
import json
import math
import re
import shlex
import string
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
from IPython.utils.text import DollarFormatter
from nbconvert.exporters import PythonExporter
from nbconvert.preprocessors import Preprocessor

from .errors import ParameterError
from .models import (
    PARAMETERS_ENV,
    PARAMETERS_TAG,
    SKIP_TAG,
    ConvertedNotebook,
    Finding,
    Parameter,
    Severity,
)

__all__ = [
    "CloudPromotePreprocessor",
    "ConversionReport",
    "coerce_parameters",
    "convert_notebook",
    "convert_notebook_with_report",
]

# Everything the converter adds to the user's namespace starts with this, so it cannot clash
# with the notebook's own names.
PRIVATE_PREFIX = "_cp_"

CELL_MARKER = "# %% cell {index}"

_IMPORT_LINES = {
    "asyncio": "import asyncio as _cp_asyncio",
    "json": "import json as _cp_json",
    "os": "import os as _cp_os",
    "runpy": "import runpy as _cp_runpy",
    "subprocess": "import subprocess as _cp_subprocess",
    "sys": "import sys as _cp_sys",
}

_RUN_SCRIPT_HELPER = '''\
def _cp_run_script(target, args, namespace, *, module=False, share_namespace=False,
                   run_name="__main__"):
    """What %run did: run a file (or -m module) with sys.argv set, then keep its names."""
    saved_argv = _cp_sys.argv
    _cp_sys.argv = [target, *args]
    init_globals = dict(namespace) if share_namespace else None
    try:
        if module:
            result = _cp_runpy.run_module(target, init_globals, run_name, alter_sys=True)
        else:
            result = _cp_runpy.run_path(target, init_globals, run_name)
    finally:
        _cp_sys.argv = saved_argv
    namespace.update({k: v for k, v in result.items() if not k.startswith("__")})
'''

_APPLY_PARAMETERS_HELPER = f'''\
def _cp_apply_parameters(names, namespace):
    """Papermill-style parameters: overrides come from the JSON object in ${PARAMETERS_ENV}."""
    raw = _cp_os.environ.get("{PARAMETERS_ENV}", "").strip()
    if not raw:
        return
    overrides = _cp_json.loads(raw)
    if not isinstance(overrides, dict):
        raise SystemExit("{PARAMETERS_ENV} must hold a JSON object of parameter values")
    for name in sorted(overrides):
        if name in names:
            namespace[name] = overrides[name]
            print(f"[cloudpromote] parameter {{name}} = {{overrides[name]!r}}", file=_cp_sys.stderr)
        else:
            print(f"[cloudpromote] ignoring {{name!r}}: not a parameter of this notebook "
                  f"(parameters: {{', '.join(names) or 'none'}})", file=_cp_sys.stderr)
'''

_HELPERS = {
    "run_script": (_RUN_SCRIPT_HELPER, ("runpy", "sys")),
    "apply_parameters": (_APPLY_PARAMETERS_HELPER, ("json", "os", "sys")),
}

# Line magics that only make sense in an interactive IPython session: dropped, with the reason.
_IPYTHON_ONLY_MAGICS: dict[str, str] = {
    "matplotlib": "jobs use the non-interactive Agg backend; save figures with plt.savefig()",
    "config": "IPython configuration does not apply to a plain Python script",
    "xmode": "the job prints plain Python tracebacks",
    "pdb": "nobody can use a debugger in an unattended job",
    "debug": "nobody can use a debugger in an unattended job",
    "tb": "the job prints plain Python tracebacks",
    "who": "namespace listings are for interactive use",
    "whos": "namespace listings are for interactive use",
    "who_ls": "namespace listings are for interactive use",
    "history": "the input history belongs to the interactive session",
    "hist": "the input history belongs to the interactive session",
    "recall": "the input history belongs to the interactive session",
    "rerun": "the input history belongs to the interactive session",
    "rep": "the input history belongs to the interactive session",
    "macro": "the input history belongs to the interactive session",
    "save": "the input history belongs to the interactive session",
    "pastebin": "the input history belongs to the interactive session",
    "edit": "editors are for interactive use",
    "ed": "editors are for interactive use",
    "lsmagic": "magic help is for interactive use",
    "magic": "magic help is for interactive use",
    "quickref": "magic help is for interactive use",
    "connect_info": "it connects front-ends to a running kernel; a job has none",
    "qtconsole": "it connects front-ends to a running kernel; a job has none",
    "autoreload": "a job loads modules once; nothing changes while it runs",
    "aimport": "a job loads modules once; nothing changes while it runs",
    "precision": "it only changes how IPython displays results",
    "pprint": "it only changes how IPython displays results",
    "colors": "it only changes how IPython displays results",
    "automagic": "it only changes interactive IPython behaviour",
    "autocall": "it only changes interactive IPython behaviour",
    "autoawait": "it only changes interactive IPython behaviour",
    "doctest_mode": "it only changes interactive IPython behaviour",
    "gui": "there is no GUI event loop in a job",
    "notebook": "it exports the interactive history",
    "page": "pagers are for interactive use",
    "pdef": "introspection is for interactive use",
    "pdoc": "introspection is for interactive use",
    "pfile": "introspection is for interactive use",
    "psource": "introspection is for interactive use",
    "pycat": "introspection is for interactive use",
    "logstart": "IPython session logging; the backend records the job's output",
    "logstop": "IPython session logging; the backend records the job's output",
    "logon": "IPython session logging; the backend records the job's output",
    "logoff": "IPython session logging; the backend records the job's output",
    "logstate": "IPython session logging; the backend records the job's output",
    "dhist": "directory history of the interactive session",
    "dirs": "directory history of the interactive session",
    "bookmark": "directory bookmarks of the interactive session",
    "alias_magic": "interactive shell configuration",
    "unalias": "interactive shell configuration",
    "alias": "interactive shell configuration; later uses of the alias will fail",
    "rehashx": "interactive shell configuration",
    "killbgscripts": "background %%script jobs do not exist in the job",
    "clear": "there is no screen to clear",
    "tensorboard": "it starts an interactive TensorBoard server; open the logs after the job",
    "load_ext": "IPython extensions are not loaded in the job",
    "reload_ext": "IPython extensions are not loaded in the job",
    "unload_ext": "IPython extensions are not loaded in the job",
    "store": "%store shares variables through the IPython profile, which the job does not have",
    "reset": "the job starts with a fresh namespace; clearing it midway is not reproduced",
    "reset_selective": "the job starts with a fresh namespace; clearing it is not reproduced",
    "xdel": "the job starts with a fresh namespace; deleting names midway is not reproduced",
}
_WARNING_DROPS = frozenset({"store", "reset", "reset_selective", "xdel", "alias"})
# Extensions whose magics the converter itself handles (or which only matter interactively).
_HARMLESS_EXTENSIONS = frozenset(
    {
        "autoreload",
        "line_profiler",
        "memory_profiler",
        "tensorboard",
        "watermark",
        "google.colab.data_table",
        "nb_black",
        "lab_black",
        "jupyter_black",
        "autotime",
        "jupyter_cloudpromote",  # its magics only submit; their cells are left out anyway
    }
)
_HELP_MAGICS = frozenset({"pinfo", "pinfo2", "psearch"})
# Timing and profiling magics: the statement runs once; value is getopt's spec of the options.
_TIMING_MAGICS = {
    "time": "",
    "timeit": "n:r:tcp:qo",
    "prun": "D:l:rs:T:q",
    "memit": "r:t:ico",
    "lprun": "f:m:D:T:rsu:",
    "mprun": "f:T:cr",
}
# IPython's default shell aliases on Linux, as the commands they run.
_SHELL_ALIASES = {
    "ls": "ls -F",
    "ll": "ls -F -o",
    "cat": "cat",
    "cp": "cp",
    "mv": "mv",
    "mkdir": "mkdir",
    "rm": "rm",
    "rmdir": "rmdir",
    "less": "less",
    "more": "more",
    "man": "man",
}
_PYTHON_CELL_MAGICS = {
    "time": "",
    "timeit": "n:r:tcp:qo",
    "prun": "D:l:rs:T:q",
    "memit": "r:t:ico",
    "capture": "",
    "debug": "",
}
_DISPLAY_CELL_MAGICS = frozenset({"html", "HTML", "markdown", "latex", "javascript", "js", "svg"})
_SCRIPT_CELL_MAGICS = frozenset(
    {"bash", "sh", "script", "perl", "ruby", "python", "python2", "python3", "pypy"}
)
_SHELL_CELL_MAGICS = frozenset({"sx", "system", "!"})
_WRITEFILE_CELL_MAGICS = frozenset({"writefile", "file"})
_UNSUPPORTED_CELL_MAGIC_FIXES = {
    "bigquery": "Run the query with the google-cloud-bigquery client instead: "
    "`df = bigquery.Client().query(sql).to_dataframe()`",
    "R": "Run the R code with rpy2 (`rpy2.robjects.r(code)`) or as a file through "
    "`subprocess.run(['Rscript', 'script.R'], check=True)`",
    "sql": "Run the query with SQLAlchemy or `pandas.read_sql(query, engine)`",
}
# Names IPython's automagic accepts without `%` (default magics and Linux shell aliases).
_AUTOMAGIC_NAMES = frozenset(
    set(_IPYTHON_ONLY_MAGICS)
    | set(_TIMING_MAGICS)
    | set(_SHELL_ALIASES)
    | {
        "cd",
        "pwd",
        "env",
        "set_env",
        "run",
        "load",
        "pip",
        "conda",
        "mamba",
        "sx",
        "system",
        "pylab",
        "pushd",
        "popd",
        "pinfo",
        "pinfo2",
        "psearch",
        "loadpy",
        "sc",
        "lf",
        "lk",
        "lx",
        "ldir",
    }
)
_PIP_OPTIONS_WITH_VALUE = frozenset(
    {
        "-r",
        "--requirement",
        "-c",
        "--constraint",
        "-e",
        "--editable",
        "-i",
        "--index-url",
        "--extra-index-url",
        "-f",
        "--find-links",
        "-t",
        "--target",
        "--prefix",
        "--root",
        "--upgrade-strategy",
        "--progress-bar",
        "--trusted-host",
        "--platform",
        "--python-version",
        "--implementation",
        "--abi",
        "--src",
        "--global-option",
        "--config-settings",
        "-C",
        "--no-binary",
        "--only-binary",
        "--cache-dir",
        "--log",
        "--proxy",
        "--retries",
        "--timeout",
        "--exists-action",
        "--cert",
        "--client-cert",
        "--report",
        "--python",
        "--root-user-action",
        "--install-option",
    }
)
_CONDA_OPTIONS_WITH_VALUE = frozenset(
    {"-c", "--channel", "-n", "--name", "-p", "--prefix", "--file", "--repodata-fn"}
)
_SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&", ";;", "|&"})
_REDIRECTIONS = frozenset({">", ">>", "<", ">&", "&>", "<&", ">|", "&>>"})


@dataclass
class ConversionReport:
    """What convert saw, beyond ConvertedNotebook: for measuring against labelled notebooks."""

    magics: list[str] = field(default_factory=list)  # sorted names, without %; help excluded
    shell_escapes: int = 0  # `!cmd` / `!!cmd` statements (pip lines included)
    shell_assignments: int = 0  # `x = !cmd`
    automagic_cells: list[int] = field(default_factory=list)
    help_lines: int = 0  # `obj?` / `obj??`
    skipped_cells: list[int] = field(default_factory=list)  # tagged skip-job or %cloud_*


class _CellFailure(Exception):
    """The cell cannot become Python: it is commented out and reported."""

    def __init__(self, code: str, message: str, fix: str, line: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fix = fix
        self.line = line


@dataclass
class _Replacement:
    start: int  # character offsets into the transformed cell source
    end: int
    text: str


# ---------------------------------------------------------------------------------------------
# Small text helpers


def _comment_safe(text: str) -> str:
    """One line of text that can sit in a comment: no line breaks, no NULs, no surrogates."""
    out = []
    for ch in text:
        if ch == "\t" or (ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF):
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1])
    return "".join(out)


def _comment_lines(text: str) -> list[str]:
    return [f"# {_comment_safe(line)}".rstrip() for line in text.split("\n")]


def _short(text: str, limit: int = 80) -> str:
    text = _comment_safe(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _escape_literal(text: str, quote: str, fstring: bool) -> str:
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == quote:
            out.append("\\" + quote)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable() or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(repr(ch)[1:-1])
        elif fstring and ch in "{}":
            out.append(ch * 2)
        else:
            out.append(ch)
    return "".join(out)


def _py_str(text: str) -> str:
    """A Python string literal for text, double-quoted (repr would pick either quote)."""
    return '"' + _escape_literal(text, '"', fstring=False) + '"'


def _block_str(text: str) -> str:
    """A readable literal for a file body: triple-quoted when that is exact, else escaped."""
    safe = (
        "\\" not in text
        and '"""' not in text
        and not text.endswith('"')
        and "\r" not in text
        and all(
            ch in "\n\t" or (ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF) for ch in text
        )
    )
    if safe and "\n" in text:
        return '"""' + text + '"""'
    raw_safe = (
        '"""' not in text
        and not text.endswith(("\\", '"'))
        and "\r" not in text
        and all(
            ch in "\n\t" or (ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF) for ch in text
        )
    )
    if raw_safe and "\n" in text:
        return 'r"""' + text + '"""'
    return _py_str(text)


def _char_col(line: str, byte_col: int) -> int:
    """ast column offsets count UTF-8 bytes; string slicing needs characters."""
    return len(line.encode("utf-8", "surrogatepass")[:byte_col].decode("utf-8", "replace"))


def _line_offsets(text: str) -> list[int]:
    offsets = [0]
    for index, ch in enumerate(text):
        if ch == "\n":
            offsets.append(index + 1)
    return offsets


def _string_rows(code: str) -> set[int]:
    """1-based rows that begin inside a multi-line string: they must never be re-indented."""
    rows: set[int] = set()
    fstring_starts: list[int] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            name = tokenize.tok_name.get(tok.type, "")
            if name == "STRING" and tok.end[0] > tok.start[0]:
                rows.update(range(tok.start[0] + 1, tok.end[0] + 1))
            elif name == "FSTRING_START":  # Python 3.12+ splits f-strings into tokens
                fstring_starts.append(tok.start[0])
            elif name == "FSTRING_END" and fstring_starts:
                start = fstring_starts.pop()
                rows.update(range(start + 1, tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return rows


def _indent_code(code: str, indent: str) -> str:
    inside = _string_rows(code)
    lines = code.split("\n")
    return "\n".join(
        line if (row in inside or not line.strip()) else indent + line
        for row, line in enumerate(lines, start=1)
    )


def _compiles(code: str) -> bool:
    try:
        compile(code, "<cell>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _has_top_level_await(code: str) -> bool:
    try:
        compiled = compile(
            code, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return bool(compiled.co_flags & inspect.CO_COROUTINE)


def _get_ipython_method(node: ast.AST) -> str | None:
    """`get_ipython().<method>(...)` -> method name, else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
        and not node.func.value.args
        and not node.func.value.keywords
    ):
        return node.func.attr
    return None


def _string_args(call: ast.Call) -> list[str] | None:
    if call.keywords:
        return None
    values = []
    for arg in call.args:
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            return None
        values.append(arg.value)
    return values


def _strip_options(text: str, spec: str) -> tuple[dict[str, str], str]:
    """Remove leading getopt-style short options (spec like "n:r:tq") and return the rest."""
    takes_value = {spec[i] for i in range(len(spec)) if i + 1 < len(spec) and spec[i + 1] == ":"}
    letters = set(spec.replace(":", ""))
    options: dict[str, str] = {}
    rest = text.lstrip()
    while rest.startswith("-") and len(rest) > 1 and rest[1] in letters:
        token_end = len(rest.split(None, 1)[0])
        index = 1
        while index < token_end:
            letter = rest[index]
            if letter not in letters:
                return options, rest
            if letter in takes_value:
                value = rest[index + 1 : token_end]
                rest = rest[token_end:].lstrip()
                if not value:
                    parts = rest.split(None, 1)
                    value = parts[0] if parts else ""
                    rest = parts[1] if len(parts) > 1 else ""
                options[letter] = value
                break
            options[letter] = ""
            index += 1
        else:
            rest = rest[token_end:].lstrip()
    return options, rest


def _split_words(text: str) -> list[str] | None:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


# ---------------------------------------------------------------------------------------------
# Name analysis


class _Bindings(ast.NodeVisitor):
    """Names a piece of code binds. With nested=False only the cell's own scope is looked at."""

    def __init__(self, nested: bool) -> None:
        self.nested = nested
        self.names: list[str] = []
        self.star_import = False

    def _add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self._add(node.id)

    def visit_alias_names(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.star_import = True
            else:
                self._add(alias.asname or alias.name.split(".")[0])

    def visit_Import(self, node: ast.Import) -> None:
        self.visit_alias_names(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.visit_alias_names(node)

    def _scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._add(node.name)
        for decorator in node.decorator_list:
            self.visit(decorator)
        if self.nested:
            if not isinstance(node, ast.ClassDef):
                for arg in [
                    *node.args.posonlyargs,
                    *node.args.args,
                    *node.args.kwonlyargs,
                    node.args.vararg,
                    node.args.kwarg,
                ]:
                    if arg is not None:
                        self._add(arg.arg)
            for stmt in node.body:
                self.visit(stmt)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scope(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        if self.nested:
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                self._add(arg.arg)
            self.visit(node.body)

    def _comprehension(self, node: ast.AST) -> None:
        # Comprehension variables live in their own scope; only walrus targets leak out.
        for child in ast.walk(node):
            if isinstance(child, ast.NamedExpr) and isinstance(child.target, ast.Name):
                self._add(child.target.id)
            elif self.nested and isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                self._add(child.id)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self._add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self._add(node.rest)
        self.generic_visit(node)


def _bound_names(tree: ast.AST, nested: bool) -> _Bindings:
    visitor = _Bindings(nested)
    visitor.visit(tree)
    return visitor


# ---------------------------------------------------------------------------------------------
# pip / conda install lines


@dataclass
class _InstallLine:
    specs: list[str]
    requirement_files: list[str]
    variables: list[str]  # words that hold shell/Python variables: not expandable here
    ignored_options: list[str]  # options that change where or how pip installs
    conda: bool = False


def _pip_words(words: list[str]) -> tuple[int, bool] | None:
    """If words start a pip/conda install command, (index of the first argument, is_conda)."""
    index = 0
    if index < len(words) and words[index] == "sudo":
        index += 1
    if index >= len(words):
        return None
    head = words[index]
    conda = False
    if re.fullmatch(r"pip(3(\.\d+)?)?", head):
        index += 1
    elif re.fullmatch(
        r"(python(3(\.\d+)?)?|\{sys\.executable\}|\$\w+|\S*/python3?(\.\d+)?)", head
    ) and words[index + 1 : index + 3] == ["-m", "pip"]:
        index += 3
    elif head == "uv" and words[index + 1 : index + 2] == ["pip"]:
        index += 2
    elif head in ("conda", "mamba", "micromamba"):
        conda = True
        index += 1
    else:
        return None
    while index < len(words) and words[index].startswith("-"):
        index += 1  # global options such as `pip -q install`
    if index < len(words) and words[index] == "install":
        return index + 1, conda
    return None


def _parse_install_args(words: list[str], conda: bool) -> _InstallLine:
    line = _InstallLine([], [], [], [], conda=conda)
    with_value = _CONDA_OPTIONS_WITH_VALUE if conda else _PIP_OPTIONS_WITH_VALUE
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if "$" in word or re.search(r"\{[^}]*\}", word):
            line.variables.append(word)
            # `pyspark==$VERSION`: the name is literal, only the version is unknown here.
            match = re.match(
                r"([A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,\s-]*\])?)\s*(===|==|>=|<=|~=|!=|<|>)", word
            )
            if match and "$" not in match.group(1) and "{" not in match.group(1):
                line.specs.append(match.group(1))
            continue
        if word.startswith("-"):
            name, has_inline_value, value = word.partition("=")
            if name in with_value:
                if not has_inline_value:
                    value = words[index] if index < len(words) else ""
                    index += 1
                if name in ("-r", "--requirement") or (conda and name == "--file"):
                    line.requirement_files.append(value)
                elif name in ("-e", "--editable"):
                    line.specs.append(value)
                elif name not in (
                    "--progress-bar",
                    "--upgrade-strategy",
                    "--root-user-action",
                    "--cache-dir",
                    "--retries",
                    "--timeout",
                    "--exists-action",
                ):
                    line.ignored_options.append(f"{name} {value}".strip())
            continue
        if conda:
            word = word.split("::", 1)[-1]
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)=([^=<>!~\s]+)(=\S+)?", word)
            if match:
                word = f"{match.group(1)}=={match.group(2)}"
        line.specs.append(word)
    return line


def _split_shell_segments(command: str) -> list[list[str]] | None:
    """Shell words grouped by command separators, redirections removed; None if unparsable."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = list(lexer)
    except ValueError:
        return None
    segments: list[list[str]] = [[]]
    skip_next = False
    for index, token in enumerate(tokens):
        if skip_next:
            skip_next = False
            continue
        if token in _SHELL_OPERATORS:
            segments.append([])
        elif token in _REDIRECTIONS or (
            token.isdigit() and index + 1 < len(tokens) and tokens[index + 1] in _REDIRECTIONS
        ):
            skip_next = token in _REDIRECTIONS
        else:
            segments[-1].append(token)
    return [segment for segment in segments if segment]


# ---------------------------------------------------------------------------------------------
# The converter


class _NotebookConverter:
    def __init__(self, nb: nbformat.NotebookNode, notebook_name: str) -> None:
        self.nb = nb
        self.notebook_name = notebook_name
        self.transformer = TransformerManager()
        self.findings: list[Finding] = []
        self.pip_requirements: list[str] = []
        self.referenced_files: list[str] = []
        self.needs_ipython = False
        self.imports: set[str] = set()
        self.helpers: set[str] = set()
        self.future_imports: list[str] = []
        self.cell_sources: dict[int, str] = {}
        self.report = ConversionReport()
        self._magics: set[str] = set()
        self._automagic: set[int] = set()
        self.bound_names: set[str] = set(dir(builtins))
        self.names_unknowable = False  # star imports or %run: any name may be defined
        self.parameters: list[Parameter] = []
        self.parameters_cell: int | None = None
        self.cell = 0  # index of the cell being converted

    # -- bookkeeping ---------------------------------------------------------------------------

    def _find(
        self,
        severity: Severity,
        code: str,
        message: str,
        fix: str,
        line: int | None = None,
        path: str | None = None,
    ) -> None:
        finding = Finding(severity, code, message, fix, cell=self.cell, line=line, path=path)
        if finding not in self.findings:
            self.findings.append(finding)

    def _use(self, *modules: str) -> None:
        self.imports.update(modules)

    def _require_ipython(self, what: str, line: int | None) -> None:
        self.needs_ipython = True
        self._find(
            Severity.WARNING,
            "ipython-magic",
            f"Cell {self.cell} line {line}: {what} has no plain-Python equivalent, so the "
            "script keeps the get_ipython() call and the job runs it inside an IPython shell.",
            "Make sure IPython (and any extension the magic comes from) is in the job's "
            "requirements, or rewrite the line in plain Python.",
            line,
        )

    def _reference(self, path: str) -> None:
        if path and path not in self.referenced_files:
            self.referenced_files.append(path)

    def _add_requirement(self, spec: str) -> None:
        if spec and spec not in self.pip_requirements:
            self.pip_requirements.append(spec)

    # -- IPython syntax ----------------------------------------------------------------------

    def _transform(self, source: str) -> str:
        try:
            return str(self.transformer.transform_cell(source))
        except Exception:  # IPython raises assorted errors on broken input; parse tells why
            return source

    def _parse(self, code: str) -> ast.Module | None:
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None

    def _automagic_line(self, source: str, tree: ast.Module | None) -> str | None:
        """IPython's automagic: a one-line cell starting with a magic name the code never binds."""
        stripped = source.strip()
        if not stripped or "\n" in stripped or stripped[0] in "%!?":
            return None
        match = re.match(r"([\w.*$]+)(.*)$", stripped)
        if not match or match.group(1) not in _AUTOMAGIC_NAMES:
            return None
        name, rest = match.group(1), match.group(2)
        if name in self.bound_names and name not in dir(builtins):
            return None
        if tree is not None:
            body = tree.body
            bare_name = (
                len(body) == 1
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Name)
            )
            # `ls -l` parses as a subtraction, but IPython still runs it as %ls.
            if not bare_name and not re.match(r"\s+-", rest):
                return None
        return "%" + stripped

    def prepass(self) -> None:
        """Collect the names the notebook binds, for $name/{expr} expansion and automagic."""
        for cell in self.nb.cells:
            if cell.get("cell_type") != "code":
                continue
            for source in self._python_texts(self._source_of(cell)):
                tree = self._parse(source)
                if tree is None:
                    continue
                bindings = _bound_names(tree, nested=True)
                self.bound_names.update(bindings.names)
                self.names_unknowable |= bindings.star_import
                for node in ast.walk(tree):
                    if _get_ipython_method(node) == "run_line_magic":
                        args = _string_args(node)  # type: ignore[arg-type]
                        if args and args[0] == "run":
                            self.names_unknowable = True

    def _python_texts(self, source: str) -> Iterable[str]:
        transformed = self._transform(source)
        yield transformed
        tree = self._parse(transformed)
        if tree is None:
            return
        for node in ast.walk(tree):
            if _get_ipython_method(node) == "run_cell_magic":
                args = _string_args(node)  # type: ignore[arg-type]
                if args and len(args) == 3 and args[0] in _PYTHON_CELL_MAGICS:
                    yield from self._python_texts(args[2])

    @staticmethod
    def _source_of(cell: nbformat.NotebookNode) -> str:
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        return str(source).replace("\r\n", "\n").replace("\r", "\n")

    # -- {expr} and $name expansion ----------------------------------------------------------

    def _field_ok(self, expression: str, dollar: bool) -> bool:
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError):
            return False
        local: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.arg):
                local.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                local.add(node.id)
        # After a star import or %run any `{name}` may exist; a `$NAME` is then more likely
        # meant for the shell (`$HOME`), so only braces get the benefit of the doubt.
        lenient = self.names_unknowable and not dollar
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id not in self.bound_names and node.id not in local and not lenient:
                    return False
        return True

    @staticmethod
    def _dollar_parse(text: str) -> list[tuple[str, str | None, str, str | None, bool]]:
        """IPython's DollarFormatter.parse, also telling which fields were `$name`."""
        pattern = DollarFormatter._dollar_pattern_ignore_single_quote
        fields: list[tuple[str, str | None, str, str | None, bool]] = []
        for literal, field_name, format_spec, conversion in string.Formatter().parse(text):
            pending = ""
            continue_from = 0
            for match in pattern.finditer(literal):
                before, name = match.group(1, 2)
                if name.startswith("$"):  # `$$name` is a literal `$name`
                    pending += before + name
                else:
                    fields.append((pending + before, name, "", None, True))
                    pending = ""
                continue_from = match.end()
            fields.append(
                (
                    pending + literal[continue_from:],
                    field_name,
                    format_spec or "",
                    conversion,
                    False,
                )
            )
        return fields

    def _expand(self, text: str) -> tuple[str, bool]:
        """Python expression for text after IPython's variable expansion, and whether any field
        was interpolated.

        IPython expands `{expr}` and `$name` in magic arguments and shell commands, and leaves
        the whole text alone if any field fails. Fields that name nothing the notebook defines
        would fail there too (e.g. a shell `$HOME`), so the text then stays literal here.
        """
        try:
            parsed = self._dollar_parse(text)
        except (ValueError, IndexError):
            return _py_str(text), False
        parts: list[tuple[str, str, str]] = []  # (kind, text, conversion)
        for literal, field_name, format_spec, conversion, dollar in parsed:
            if literal:
                parts.append(("lit", literal, ""))
            if field_name is None:
                continue
            expression = f"{field_name}:{format_spec}" if format_spec else field_name
            if conversion not in (None, "r", "s", "a") or not self._field_ok(expression, dollar):
                return _py_str(text), False
            parts.append(("expr", expression.strip(), conversion or ""))
        if not any(kind == "expr" for kind, _, _ in parts):
            return _py_str("".join(value for _, value, _ in parts)), False
        return self._fstring(parts), True

    @staticmethod
    def _fstring(parts: list[tuple[str, str, str]]) -> str:
        expressions = [value for kind, value, _ in parts if kind == "expr"]
        for quote in ('"', "'"):
            if any(quote in e or "\\" in e or "#" in e or "\n" in e for e in expressions):
                continue
            body = []
            for kind, value, conversion in parts:
                if kind == "lit":
                    body.append(_escape_literal(value, quote, fstring=True))
                else:
                    simple = re.fullmatch(r"[^\W\d]\w*(\.[^\W\d]\w*)*", value)
                    code = value if simple else f"({value})"
                    body.append("{" + code + (f"!{conversion}" if conversion else "") + "}")
            return "f" + quote + "".join(body) + quote
        pieces = []
        for kind, value, conversion in parts:
            if kind == "lit":
                pieces.append(_py_str(value))
            else:
                function = {"r": "repr", "a": "ascii"}.get(conversion, "str")
                pieces.append(f"{function}(({value}))")
        return "(" + " + ".join(pieces) + ")"

    # -- cells -------------------------------------------------------------------------------

    def convert_cell(self, index: int, cell: nbformat.NotebookNode) -> str:
        """Script text for one code cell, starting with its marker comment."""
        self.cell = index
        marker = CELL_MARKER.format(index=index)
        source = self._source_of(cell)
        tags = cell.get("metadata", {}).get("tags", []) or []
        if SKIP_TAG in tags:
            self.report.skipped_cells.append(index)
            return f"\n{marker}: left out (tagged {SKIP_TAG})"
        if self._cloud_magic(source):
            self.report.skipped_cells.append(index)
            return f"\n{marker}: left out (it submits the notebook with a %cloud_ magic)"
        try:
            code = self._convert_source(source, line_offset=0)
            code = self._finish_cell(code)
        except _CellFailure as failure:
            self._find(Severity.ERROR, failure.code, failure.message, failure.fix, failure.line)
            return "\n".join(
                [
                    f"\n{marker}: commented out: {_comment_safe(failure.message)}",
                    *_comment_lines(source.rstrip("\n")),
                ]
            )
        self.cell_sources[index] = code
        return f"\n{marker}\n{code}" if code.strip() else f"\n{marker}"

    def _cloud_magic(self, source: str) -> bool:
        tree = self._parse(self._transform(source))
        if tree is not None:
            for node in ast.walk(tree):
                if _get_ipython_method(node) in ("run_line_magic", "run_cell_magic"):
                    args = _string_args(node)  # type: ignore[arg-type]
                    if args and args[0].startswith("cloud_"):
                        return True
            return False
        return bool(re.search(r"^\s*%{1,2}cloud_\w", source, re.MULTILINE))

    def _finish_cell(self, code: str) -> str:
        """Whole-cell checks: top-level await, __future__ imports, and that it compiles."""
        code = code.rstrip("\n")
        if not _compiles(code) and _has_top_level_await(code):
            code = self._wrap_await(code)
        try:
            compile(code, "<cell>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise _CellFailure(
                "syntax-error",
                f"Cell {self.cell} is not valid Python after IPython syntax was handled: "
                f"line {exc.lineno}: {exc.msg}.",
                "Fix the syntax error, or tag the cell skip-job if it fails on purpose.",
                exc.lineno,
            ) from exc
        except (ValueError, RecursionError, MemoryError) as exc:
            raise _CellFailure(
                "syntax-error",
                f"Cell {self.cell} cannot be compiled: {exc}.",
                "Remove the offending characters, or tag the cell skip-job.",
                None,
            ) from exc
        return self._hoist_future_imports(code)

    def _wrap_await(self, code: str) -> str:
        tree = self._parse(code)
        if tree is None:
            return code
        bindings = _bound_names(tree, nested=False)
        name = f"{PRIVATE_PREFIX}cell_{self.cell}"
        lines = [
            "# cloudpromote: top-level await: the cell runs in asyncio.run() of an async "
            "function; its names stay global",
            f"async def {name}():",
        ]
        if bindings.names:
            lines.append(f"    global {', '.join(bindings.names)}")
        lines.append(_indent_code(code, "    "))
        lines.append(f"_cp_asyncio.run({name}())")
        wrapped = "\n".join(lines)
        if _compiles(wrapped):
            self._use("asyncio")
            self._find(
                Severity.INFO,
                "top-level-await",
                f"Cell {self.cell} uses top-level await; the script runs it with asyncio.run(), "
                "a new event loop per such cell (the kernel shared one loop between cells).",
                "Nothing to do unless objects bound to one event loop are reused in later cells; "
                "then move that async code into one async function.",
            )
            return wrapped
        return code

    def _hoist_future_imports(self, code: str) -> str:
        tree = self._parse(code)
        if tree is None:
            return code
        replacements = []
        offsets = _line_offsets(code)
        lines = code.split("\n")
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                statement = ast.get_source_segment(code, stmt) or ""
                normalized = "from __future__ import " + ", ".join(
                    alias.name for alias in stmt.names
                )
                if normalized not in self.future_imports:
                    self.future_imports.append(normalized)
                start = offsets[stmt.lineno - 1] + _char_col(
                    lines[stmt.lineno - 1], stmt.col_offset
                )
                end_line = stmt.end_lineno or stmt.lineno
                end = offsets[end_line - 1] + _char_col(
                    lines[end_line - 1], stmt.end_col_offset or 0
                )
                replacements.append(
                    _Replacement(
                        start,
                        end,
                        "pass  # cloudpromote: moved to "
                        f"the top of the script: {_short(statement)}",
                    )
                )
        for rep in reversed(replacements):
            code = code[: rep.start] + rep.text + code[rep.end :]
        return code

    def _convert_source(self, source: str, line_offset: int) -> str:
        """IPython cell source -> Python source (no marker). Raises _CellFailure."""
        transformed = self._transform(source)
        tree = self._parse(transformed)
        automagic = self._automagic_line(transformed, tree)
        if automagic is not None:
            self._automagic.add(self.cell)
            transformed = self._transform(automagic)
            tree = self._parse(transformed)
        if tree is None:
            try:
                compile(transformed, "<cell>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
            except SyntaxError as exc:
                line = (exc.lineno or 0) + line_offset if exc.lineno else None
                raise _CellFailure(
                    "syntax-error",
                    f"Cell {self.cell} is not valid Python even after IPython syntax was "
                    f"handled: line {line}: {exc.msg}.",
                    "Fix the syntax error (or delete the cell if it fails on purpose to show an "
                    f"error), or tag it {SKIP_TAG} to leave it out of the job.",
                    line,
                ) from exc
            except (ValueError, RecursionError, MemoryError) as exc:
                raise _CellFailure(
                    "syntax-error",
                    f"Cell {self.cell} cannot be parsed: {exc}.",
                    f"Remove the offending characters, or tag the cell {SKIP_TAG}.",
                    None,
                ) from exc
            raise _CellFailure(
                "syntax-error",
                f"Cell {self.cell} cannot be parsed.",
                f"Tag the cell {SKIP_TAG}.",
                None,
            )
        return self._rewrite(transformed, tree, line_offset)

    def _rewrite(self, code: str, tree: ast.Module, line_offset: int) -> str:
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        lines = code.split("\n")
        offsets = _line_offsets(code)

        def position(lineno: int, col: int) -> int:
            return offsets[lineno - 1] + _char_col(lines[lineno - 1], col)

        calls: list[ast.Call] = []
        stray_get_ipython: list[ast.Name] = []
        self._collect_calls(tree, calls, stray_get_ipython)
        if stray_get_ipython:
            self.needs_ipython = True
            line = stray_get_ipython[0].lineno + line_offset
            self._find(
                Severity.INFO,
                "get-ipython",
                f"Cell {self.cell} line {line} calls get_ipython(); the job runs the script "
                "inside an IPython shell so the call still works.",
                "Make sure IPython is in the job's requirements (resolve adds it when imported), "
                "or remove the call if it only checks for Colab or Jupyter.",
                line,
            )
        replacements: list[_Replacement] = []
        for call in calls:
            parent = parents.get(call)
            line = call.lineno + line_offset
            if isinstance(parent, ast.Expr):
                grand = parents.get(parent, tree)
                stmt_lines = self._statement_for(
                    call, line, top_level=isinstance(grand, ast.Module) and len(tree.body) == 1
                )
                if stmt_lines is None:
                    continue
                start = position(parent.lineno, parent.col_offset)
                end = position(parent.end_lineno or parent.lineno, parent.end_col_offset or 0)
                line_text = lines[parent.lineno - 1]
                indent = line_text[: _char_col(line_text, parent.col_offset)]
                end_line = lines[(parent.end_lineno or parent.lineno) - 1]
                rest = end_line[_char_col(end_line, parent.end_col_offset or 0) :]
                free = not indent.strip() and not rest.strip() and not rest.lstrip().startswith(";")
                text = self._place(stmt_lines, indent, free, isinstance(grand, ast.Module))
            else:
                expression = self._expression_for(call, line)
                if expression is None:
                    continue
                start = position(call.lineno, call.col_offset)
                end = position(call.end_lineno or call.lineno, call.end_col_offset or 0)
                text = expression
            replacements.append(_Replacement(start, end, text))
        for rep in sorted(replacements, key=lambda r: r.start, reverse=True):
            code = code[: rep.start] + rep.text + code[rep.end :]
        return code

    def _collect_calls(self, node: ast.AST, calls: list[ast.Call], stray: list[ast.Name]) -> None:
        for child in ast.iter_child_nodes(node):
            method = _get_ipython_method(child)
            if method is not None:
                assert isinstance(child, ast.Call)
                calls.append(child)
                continue
            if isinstance(child, ast.Name) and child.id == "get_ipython":
                stray.append(child)
            self._collect_calls(child, calls, stray)

    @staticmethod
    def _place(stmt_lines: list[str], indent: str, free: bool, module_level: bool) -> str:
        """Join replacement statements so they fit where the original statement was."""
        code_lines = [line for line in stmt_lines if not line.lstrip().startswith("#")]
        comments = [line for line in stmt_lines if line.lstrip().startswith("#")]
        if not free:
            return "; ".join(code_lines) if code_lines else "pass"
        if not code_lines and not module_level:
            # The statement may be the only one in its block: keep a statement there.
            return "pass  " + (comments[0].lstrip() if comments else "")
        pieces = [_indent_code(line, indent) for line in stmt_lines]
        return "\n".join(pieces)[len(indent) :] if pieces else "pass"

    # -- dispatch -----------------------------------------------------------------------------

    def _statement_for(self, call: ast.Call, line: int, top_level: bool) -> list[str] | None:
        """Statements replacing `get_ipython().<method>(...)` used as a statement; None keeps it."""
        method = _get_ipython_method(call)
        args = _string_args(call)
        if args is None:
            self._require_ipython(f"get_ipython().{method}() with computed arguments", line)
            return None
        if method == "run_line_magic" and len(args) == 2:
            return self._line_magic(args[0], args[1], line, as_expression=False)
        if method == "magic" and len(args) == 1:  # the pre-IPython-5 spelling
            name, _, rest = args[0].lstrip("%").partition(" ")
            return self._line_magic(name, rest, line, as_expression=False)
        if method == "run_cell_magic" and len(args) == 3:
            self._magics.add(args[0])
            if not top_level:
                self._require_ipython(f"the %%{args[0]} cell magic inside other code", line)
                return None
            return self._cell_magic(args[0], args[1], args[2], line)
        if method in ("system", "getoutput") and len(args) == 1:
            self.report.shell_escapes += 1
            return self._shell(args[0], line, capture=False)
        self._require_ipython(f"get_ipython().{method}()", line)
        return None

    def _expression_for(self, call: ast.Call, line: int) -> str | None:
        method = _get_ipython_method(call)
        args = _string_args(call)
        if args is None:
            self._require_ipython(f"get_ipython().{method}() with computed arguments", line)
            return None
        result: str | None = None
        if method == "run_line_magic" and len(args) == 2:
            statements = self._line_magic(args[0], args[1], line, as_expression=True)
            result = statements[0] if statements else None
        elif method == "getoutput" and len(args) == 1:
            self.report.shell_assignments += 1
            statements = self._shell(args[0], line, capture=True)
            result = statements[0] if statements else None
        elif method == "system" and len(args) == 1:
            self.report.shell_escapes += 1
            statements = self._shell(args[0], line, capture=False)
            result = statements[0] if statements else None
        if result is None:
            self._require_ipython(f"get_ipython().{method}() inside an expression", line)
            return None
        return result if _is_primary(result) else f"({result})"

    # -- line magics -------------------------------------------------------------------------

    def _line_magic(self, name: str, args: str, line: int, as_expression: bool) -> list[str] | None:
        """Replacement for one line magic. As an expression: a one-element list (or None)."""
        shown = _short(f"%{name} {args}".strip())
        if name in _HELP_MAGICS:
            self.report.help_lines += 1
            asked = _short(args) + ("??" if name == "pinfo2" else "?")
            return ["None"] if as_expression else [f"# cloudpromote: help request dropped: {asked}"]
        self._magics.add(name)
        if name.startswith("%"):
            self._find(
                Severity.ERROR,
                "misplaced-cell-magic",
                f"Cell {self.cell} line {line}: %{name} is a cell magic but is not on the "
                "cell's first line, so IPython fails on it too.",
                f"Move %{name} to the first line of its own cell.",
                line,
            )
            return None
        if name in _TIMING_MAGICS:
            return self._timing_magic(name, args, line, as_expression)
        if name in ("env", "set_env"):
            return self._env_magic(name, args, line, as_expression)
        if name == "cd":
            return self._cd_magic(args, line)
        if name == "pwd":
            self._use("os")
            return ["_cp_os.getcwd()"] if as_expression else ["print(_cp_os.getcwd())"]
        if name == "run":
            return self._run_magic(args, line, as_expression)
        if name in ("load", "loadpy"):
            return self._load_magic(name, args, line, as_expression)
        if name in ("pip", "conda", "mamba"):
            return self._install_magic(name, args, line, as_expression)
        if name in ("sx", "system"):
            return self._shell(args, line, capture=True)
        if name in _SHELL_ALIASES:
            return self._shell(
                f"{_SHELL_ALIASES[name]} {args}".strip(), line, capture=False, expand=True
            )
        if name == "pylab":
            return self._pylab(shown, line, as_expression)
        if name in _IPYTHON_ONLY_MAGICS:
            return self._drop_magic(name, args, shown, line, as_expression)
        self._require_ipython(f"the %{name} magic", line)
        return None

    def _drop_magic(
        self, name: str, args: str, shown: str, line: int, as_expression: bool
    ) -> list[str]:
        reason = _IPYTHON_ONLY_MAGICS[name]
        severity = Severity.WARNING if name in _WARNING_DROPS else Severity.INFO
        fix = "Nothing to do unless the job relies on it."
        if name in ("load_ext", "reload_ext"):
            extension = args.strip().split()[0] if args.strip() else ""
            if extension not in _HARMLESS_EXTENSIONS:
                severity = Severity.WARNING
            reason = f"the IPython extension {extension or '(none)'} is not loaded in the job"
            fix = (
                "Nothing to do if the extension only adds magics this converter handles; "
                "otherwise call the library's Python API instead of its magics."
            )
        elif name == "store":
            fix = "Save the values to a file the job reads, or recompute them in the notebook."
        elif name == "matplotlib":
            fix = "Save figures with plt.savefig() into $CLOUDPROMOTE_OUTPUT_DIR to keep them."
        self._find(
            severity,
            "load-ext" if name == "load_ext" else "magic-dropped",
            f"Cell {self.cell} line {line}: {shown} is left out of the script: {reason}.",
            fix,
            line,
        )
        if as_expression:
            return ["None"]
        return [f"# cloudpromote: {shown} dropped: {reason}"]

    def _pylab(self, shown: str, line: int, as_expression: bool) -> list[str] | None:
        if as_expression:
            return None
        self._find(
            Severity.INFO,
            "magic-dropped",
            f"Cell {self.cell} line {line}: {shown} becomes the imports it performs; "
            "the GUI part is dropped (jobs use the Agg backend).",
            "Prefer explicit `import numpy as np` and `import matplotlib.pyplot as plt`.",
            line,
        )
        return [
            f"# cloudpromote: {shown}: the imports it performs, without the GUI part",
            "import numpy",
            "import matplotlib",
            "from matplotlib import pylab, mlab, pyplot",
            "np = numpy",
            "plt = pyplot",
            "from pylab import *",
            "from numpy import *",
        ]

    def _timing_magic(
        self, name: str, args: str, line: int, as_expression: bool
    ) -> list[str] | None:
        _, statement = _strip_options(args, _TIMING_MAGICS[name])
        statement = statement.strip()
        if not statement:
            return ["None"] if as_expression else [f"# cloudpromote: %{name} with nothing to run"]
        if as_expression:
            if name != "time":
                return None
            try:
                ast.parse(statement, mode="eval")
            except SyntaxError:
                return ["None"]
            return [statement]
        self._find(
            Severity.INFO,
            "timing-magic",
            f"Cell {self.cell} line {line}: %{name} runs its statement once in the job, "
            "without timing or profiling it.",
            "Nothing to do; time the job from its logs, or use time.perf_counter() in code.",
            line,
        )
        converted = self._convert_source(statement, line - 1).rstrip("\n")
        return [f"# cloudpromote: %{name}: the statement runs once, untimed", converted]

    def _env_magic(self, name: str, args: str, line: int, as_expression: bool) -> list[str] | None:
        self._use("os")
        text = args.strip()
        if not text:
            if as_expression:
                return ["dict(_cp_os.environ)"]
            return [f"# cloudpromote: %{name} listing dropped: it only shows the environment"]
        separator = "=" if "=" in text else " "
        key, has_value, value = text.partition(separator)
        key = key.strip()
        if not has_value:
            if name == "set_env":
                return None
            lookup = f"_cp_os.environ[{_py_str(key)}]"
            return [lookup]
        if not key or re.search(r"\s|[{}$]", key):
            return None
        value_code, _ = self._expand(value.strip())
        if as_expression:
            return [f"_cp_os.environ.__setitem__({_py_str(key)}, {value_code})"]
        return [f"_cp_os.environ[{_py_str(key)}] = {value_code}"]

    def _cd_magic(self, args: str, line: int) -> list[str] | None:
        self._use("os")
        options, rest = _strip_options(args, "qb")
        target = rest.strip()
        if "b" in options or target == "-" or re.fullmatch(r"-\d+|--\S+", target):
            return None
        quiet = "q" in options
        if not target:
            path_code = '_cp_os.path.expanduser("~")'
        else:
            expanded, _ = self._expand(_unquote(target))
            path_code = f"_cp_os.path.expanduser({expanded})"
        statements = [f"_cp_os.chdir({path_code})"]
        if not quiet:
            statements.append("print(_cp_os.getcwd())")
        return ["; ".join(statements)]

    def _run_magic(self, args: str, line: int, as_expression: bool) -> list[str] | None:
        if as_expression:
            return None
        options, rest = _strip_options(args, "nidtN:b:pD:l:rs:T:em:G")
        unsupported = sorted(set(options) & set("dbpDlrsT"))
        if unsupported:
            return None
        module = options.get("m")
        words = _split_words(rest)
        if words is None:
            return None
        if module is None:
            if not words:
                return None
            target, argv = words[0], words[1:]
            if not target.endswith(".py"):
                if target.endswith((".ipynb", ".ipy")):
                    self._reference(target)
                return None
            if "{" not in target and "$" not in target:
                self._reference(target)
        else:
            target, argv = module, words
        target_code, _ = self._expand(target)
        argv_code = "[" + ", ".join(self._expand(word)[0] for word in argv) + "]"
        self._use("runpy", "sys")
        self.helpers.add("run_script")
        keywords = []
        if module is not None:
            keywords.append("module=True")
        if "i" in options:
            keywords.append("share_namespace=True")
        if "n" in options:
            keywords.append('run_name="__cloudpromote_run__"')
        extra = "".join(f", {keyword}" for keyword in keywords)
        self._find(
            Severity.INFO,
            "run-magic",
            f"Cell {self.cell} line {line}: %run {_short(args)} runs with runpy, and its names "
            "are copied into the script's namespace as IPython does.",
            "Make sure the file is packed with the job (it is listed in referenced_files).",
            line,
            path=target if module is None else None,
        )
        return [f"_cp_run_script({target_code}, {argv_code}, globals(){extra})"]

    def _load_magic(self, name: str, args: str, line: int, as_expression: bool) -> list[str] | None:
        _, rest = _strip_options(args, "r:s:yn:")
        target = _unquote(rest.strip())
        if target and "{" not in target and "$" not in target and "://" not in target:
            self._reference(target)
        self._find(
            Severity.WARNING,
            "load-magic",
            f"Cell {self.cell} line {line}: %{name} {_short(rest)} only pastes the file into "
            "the notebook cell when run interactively; the job does not run that code.",
            "Run the cell once in Jupyter so the file's code replaces the %load line, or use "
            "%run (or an import) if the job should execute the file.",
            line,
            path=target or None,
        )
        if as_expression:
            return ["None"]
        return [f"# cloudpromote: %{name} {_short(rest)} dropped: it only edits the cell"]

    # -- installs and shell --------------------------------------------------------------------

    def _install_magic(
        self, name: str, args: str, line: int, as_expression: bool
    ) -> list[str] | None:
        words = _split_words(args)
        if words is None or not words or words[0] != "install":
            return None  # `%pip list`, `%pip uninstall ...`: IPython runs pip for those
        install = _parse_install_args(words[1:], conda=name != "pip")
        self._record_install(install, f"%{name} {args}", line)
        if as_expression:
            return ["None"]
        return [
            f"# cloudpromote: {_short('%' + name + ' ' + args)}: not run; the packages are "
            "installed into the job's image"
        ]

    def _record_install(self, install: _InstallLine, shown: str, line: int) -> None:
        for spec in install.specs:
            self._add_requirement(spec)
        for path in install.requirement_files:
            self._reference(path)
            self._find(
                Severity.INFO,
                "pip-requirements-file",
                f"Cell {self.cell} line {line}: `{_short(shown)}` installs from the "
                f"requirements file {path}; its lines are not copied into pip_requirements.",
                "Keep the file next to the notebook so resolve can read it.",
                line,
                path=path,
            )
        if install.variables:
            self._find(
                Severity.WARNING,
                "pip-variable",
                f"Cell {self.cell} line {line}: `{_short(shown)}` uses variables "
                f"({', '.join(install.variables)}) that cannot be expanded before the job runs, "
                "so only the literal package names go into the image.",
                "Write the package names literally on the install line, or add them to "
                "requirements.txt next to the notebook.",
                line,
            )
        if install.ignored_options:
            self._find(
                Severity.WARNING,
                "pip-options",
                f"Cell {self.cell} line {line}: the install options "
                f"{', '.join(install.ignored_options)} are not carried into the image build.",
                "Configure the package index in the cloudpromote settings (pip_index_url), or "
                "install from a requirements.txt next to the notebook.",
                line,
            )
        if install.conda:
            self._find(
                Severity.INFO,
                "conda-install",
                f"Cell {self.cell} line {line}: `{_short(shown)}` names conda packages; the job "
                "installs them with pip under the same names.",
                "Check that each package has the same name on PyPI.",
                line,
            )

    def _shell(self, command: str, line: int, capture: bool, expand: bool = True) -> list[str]:
        """Replacement for `!cmd` (capture=False) or `x = !cmd` (capture=True)."""
        command = command.strip()
        segments = _split_shell_segments(command)
        installs = []
        if segments:
            for segment in segments:
                found = _pip_words(segment)
                if found is not None:
                    installs.append((segment, found))
        if installs:
            for segment, (start, conda) in installs:
                self._record_install(
                    _parse_install_args(segment[start:], conda), "!" + command, line
                )
            if segments and len(installs) < len(segments):
                self._find(
                    Severity.WARNING,
                    "pip-combined-command",
                    f"Cell {self.cell} line {line}: `!{_short(command)}` mixes a package "
                    "install with other shell commands; the install goes into the image and "
                    "the whole line is left out of the script.",
                    "Put the other commands on their own `!` line.",
                    line,
                )
            if capture:
                return ["[]"]
            return [
                f"# cloudpromote: !{_short(command)}: not run; the packages are installed "
                "into the job's image"
            ]
        command_code, _ = self._expand(command) if expand else (_py_str(command), False)
        self._use("subprocess")
        self._find(
            Severity.INFO,
            "shell-escape",
            f"Cell {self.cell} line {line}: the shell command `{_short(command)}` runs with "
            "/bin/sh in the job; a non-zero exit status fails the job (IPython only printed it).",
            "Make sure the command exists in the job's image and needs no interaction or "
            "local credentials; or replace it with Python.",
            line,
        )
        if capture:
            return [
                f"_cp_subprocess.run({command_code}, shell=True, check=True, "
                "stdout=_cp_subprocess.PIPE, text=True).stdout.splitlines()"
            ]
        return [f"_cp_subprocess.run({command_code}, shell=True, check=True)"]

    # -- cell magics ---------------------------------------------------------------------------

    def _cell_magic(self, name: str, magic_line: str, body: str, line: int) -> list[str]:
        shown = _short(f"%%{name} {magic_line}".strip())
        if name in _PYTHON_CELL_MAGICS:
            return self._python_cell_magic(name, magic_line, body, shown)
        if name in _WRITEFILE_CELL_MAGICS:
            return self._writefile(magic_line, body, shown)
        if name in _SCRIPT_CELL_MAGICS:
            return self._script_cell(name, magic_line, body, shown)
        if name in _SHELL_CELL_MAGICS:
            self._use("subprocess")
            self._find(
                Severity.INFO,
                "shell-escape",
                f"Cell {self.cell}: the {shown} cell runs with /bin/sh in the job; a "
                "non-zero exit status fails the job.",
                "Make sure the commands exist in the job's image.",
                1,
            )
            return [
                f"# cloudpromote: {shown}: the cell body runs with /bin/sh",
                f"_cp_subprocess.run({_block_str(body)}, shell=True, check=True)",
            ]
        if name in _DISPLAY_CELL_MAGICS:
            self._find(
                Severity.INFO,
                "magic-dropped",
                f"Cell {self.cell}: the {shown} cell only displays content in the "
                "notebook; it is left out of the script.",
                "Nothing to do unless the job should produce that content as a file.",
                1,
            )
            return [f"# cloudpromote: {shown} cell dropped: it only displays content"]
        fix = _UNSUPPORTED_CELL_MAGIC_FIXES.get(
            name,
            f"Rewrite the cell in Python (or as a %%bash cell), or tag it {SKIP_TAG} "
            "if the job does not need it.",
        )
        raise _CellFailure(
            "unsupported-cell-magic",
            f"Cell {self.cell} uses the %%{name} cell magic, which a plain Python script cannot "
            "run; the cell is commented out.",
            fix,
            1,
        )

    def _python_cell_magic(self, name: str, magic_line: str, body: str, shown: str) -> list[str]:
        _, rest = _strip_options(magic_line, _PYTHON_CELL_MAGICS[name])
        lines = [f"# cloudpromote: {shown}: the body runs once as plain Python"]
        if name == "capture":
            words = [word for word in rest.split() if not word.startswith("--")]
            if words:
                self._find(
                    Severity.WARNING,
                    "capture-output",
                    f"Cell {self.cell}: %%capture {words[0]} stores the cell's output in "
                    f"{words[0]}; the job prints the output to its log and does not define "
                    f"{words[0]}.",
                    f"Remove later uses of {words[0]}, or redirect the output in Python "
                    "(contextlib.redirect_stdout).",
                    1,
                )
            rest = ""
        elif name in ("time", "timeit", "prun", "memit"):
            self._find(
                Severity.INFO,
                "timing-magic",
                f"Cell {self.cell}: {shown} runs the cell body once in the job, without "
                "timing or profiling it.",
                "Nothing to do; time the job from its logs if needed.",
                1,
            )
        if name in ("timeit", "debug") and rest.strip():
            # %%timeit's line is setup code; %%debug's line is a statement run before the body.
            lines.append(self._convert_source(rest.strip(), 0).rstrip("\n"))
        converted = self._convert_source(body, 1).rstrip("\n")
        if converted.strip():
            lines.append(converted)
        return lines

    def _writefile(self, magic_line: str, body: str, shown: str) -> list[str]:
        words = _split_words(magic_line) or []
        append = any(word in ("-a", "--append") for word in words)
        names = [word for word in words if not word.startswith("-")]
        if len(names) != 1:
            raise _CellFailure(
                "syntax-error",
                f"Cell {self.cell}: {shown} needs exactly one file name.",
                "Write `%%writefile path` on the first line of the cell.",
                1,
            )
        target = names[0]
        path_code, _ = self._expand(target)
        if target.startswith("~"):
            self._use("os")
            path_code = f"_cp_os.path.expanduser({path_code})"
        mode = '"a"' if append else '"w"'
        return [
            f"# cloudpromote: {shown}: the cell body is written to the file when the job runs",
            f'with open({path_code}, {mode}, encoding="utf-8") as _cp_file:',
            f"    _cp_file.write({_block_str(body)})",
        ]

    def _script_cell(self, name: str, magic_line: str, body: str, shown: str) -> list[str]:
        words = _split_words(magic_line)
        if words is None:
            raise _CellFailure(
                "syntax-error",
                f"Cell {self.cell}: cannot read {shown}.",
                "Check the quotes on the magic's line.",
                1,
            )
        out_var = err_var = None
        check = True
        interpreter: list[str] = []
        index = 0
        background = False
        while index < len(words):
            word = words[index]
            index += 1
            if word in ("--out", "--err", "--proc") and index < len(words):
                value = words[index]
                index += 1
                if word == "--out":
                    out_var = value
                elif word == "--err":
                    err_var = value
                else:
                    background = True
            elif word == "--bg":
                background = True
            elif word == "--no-raise-error":
                check = False
            elif word == "--raise-error":
                check = True
            else:
                interpreter.append(word)
        for var in (out_var, err_var):
            if var is not None and not var.isidentifier():
                raise _CellFailure(
                    "syntax-error",
                    f"Cell {self.cell}: {shown}: {var} is not a Python name.",
                    "Use a plain variable name.",
                    1,
                )
        if name != "script":
            interpreter = [name, *interpreter]
        if not interpreter:
            raise _CellFailure(
                "syntax-error",
                f"Cell {self.cell}: {shown} names no program.",
                "Write e.g. `%%script bash` on the cell's first line.",
                1,
            )
        if background:
            self._find(
                Severity.WARNING,
                "script-background",
                f"Cell {self.cell}: {shown} ran in the background in the notebook; the "
                "job runs it to completion before the next cell.",
                "Nothing to do unless the job relied on it running alongside later cells.",
                1,
            )
        self._use("subprocess")
        self._find(
            Severity.INFO,
            "shell-escape",
            f"Cell {self.cell}: the {shown} cell runs with {interpreter[0]} in the job"
            + ("; a non-zero exit status fails the job." if check else "."),
            f"Make sure {interpreter[0]} and the commands the cell uses exist in the job's image.",
            1,
        )
        for install_line in self._install_lines_in_script(body):
            self._record_install(install_line, f"%%{name} cell", 1)
            self._find(
                Severity.WARNING,
                "pip-in-shell-cell",
                f"Cell {self.cell}: the {shown} cell installs packages at run time; they are "
                "also added to the image's requirements.",
                "Remove the install line from the cell so the job needs no network for it.",
                1,
            )
        keywords = [f"input={_block_str(body)}", "text=True", f"check={check}"]
        if out_var:
            keywords.append("stdout=_cp_subprocess.PIPE")
        if err_var:
            keywords.append("stderr=_cp_subprocess.PIPE")
        argv = "[" + ", ".join(_py_str(word) for word in interpreter) + "]"
        run = f"_cp_subprocess.run({argv}, {', '.join(keywords)})"
        lines = [f"# cloudpromote: {shown}: the cell body runs with {_short(interpreter[0])}"]
        if out_var or err_var:
            lines.append(f"_cp_completed = {run}")
            if out_var:
                lines.append(f"{out_var} = _cp_completed.stdout")
            if err_var:
                lines.append(f"{err_var} = _cp_completed.stderr")
        else:
            lines.append(run)
        return lines

    @staticmethod
    def _install_lines_in_script(body: str) -> list[_InstallLine]:
        found = []
        for raw in re.sub(r"\\\n", " ", body).split("\n"):
            segments = (
                _split_shell_segments(raw.split("#", 1)[0] if raw.lstrip().startswith("#") else raw)
                or []
            )
            for segment in segments:
                start = _pip_words(segment)
                if start is not None:
                    found.append(_parse_install_args(segment[start[0] :], start[1]))
        return found

    # -- parameters ----------------------------------------------------------------------------

    def find_parameters(self) -> None:
        tagged = [
            index
            for index, cell in enumerate(self.nb.cells)
            if cell.get("cell_type") == "code"
            and PARAMETERS_TAG in (cell.get("metadata", {}).get("tags", []) or [])
        ]
        if not tagged:
            return
        self.parameters_cell = tagged[0]
        self.cell = tagged[0]
        if len(tagged) > 1:
            self._find(
                Severity.WARNING,
                "parameters-cells",
                f"Cells {', '.join(map(str, tagged))} are all tagged {PARAMETERS_TAG}; only the "
                f"first (cell {tagged[0]}) is used, as papermill does.",
                f"Remove the {PARAMETERS_TAG} tag from the other cells.",
            )

    def extract_parameters(self) -> None:
        if self.parameters_cell is None:
            return
        self.cell = self.parameters_cell
        source = self.cell_sources.get(self.parameters_cell)
        tree = self._parse(source) if source is not None else None
        if tree is None:
            self._find(
                Severity.WARNING,
                "parameters-cell",
                f"The parameters cell {self.parameters_cell} is left out of the script or is "
                "not valid Python, so the notebook has no parameters.",
                "Make the parameters cell plain assignments such as `epochs = 10`.",
            )
            return
        found: dict[str, Parameter] = {}
        for stmt in tree.body:
            targets: list[ast.expr] = []
            value: ast.expr | None = None
            if isinstance(stmt, ast.Assign):
                targets, value = list(stmt.targets), stmt.value
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                targets, value = [stmt.target], stmt.value
            if value is None:
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = self._parameter(target.id, value, source or "")
        self.parameters = list(found.values())

    @staticmethod
    def _parameter(name: str, value: ast.expr, source: str) -> Parameter:
        default_source = ast.get_source_segment(source, value) or ""
        try:
            default = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return Parameter(name, None, default_source, "any")
        kind = _literal_type(default)
        return Parameter(name, default if kind != "any" else None, default_source, kind)

    def parameters_code(self) -> str:
        names = ", ".join(_py_str(p.name) for p in self.parameters)
        names_tuple = f"({names},)" if len(self.parameters) == 1 else f"({names})"
        self._use("json", "os", "sys")
        self.helpers.add("apply_parameters")
        return "\n".join(
            [
                "",
                "# %% injected parameters (papermill style): the values in the JSON object in",
                f"# ${PARAMETERS_ENV} replace the defaults above; without it the defaults apply.",
                f"_cp_apply_parameters({names_tuple}, globals())",
            ]
        )

    # -- assembly ------------------------------------------------------------------------------

    def preamble(self) -> str:
        lines = [
            "# Generated by jupyter-cloudpromote from a Jupyter notebook; edits here are lost "
            "when it is converted again.",
            f"# Notebook: {_comment_safe(self.notebook_name)}",
            "# `# %% cell N` marks notebook cell N (0-based, markdown cells included).",
        ]
        lines.extend(sorted(self.future_imports))
        modules = set(self.imports)
        for helper in self.helpers:
            modules.update(_HELPERS[helper][1])
        if "subprocess" in modules:
            modules.add("sys")
        if modules:
            lines.append("")
            lines.extend(_IMPORT_LINES[module] for module in sorted(modules))
        if "subprocess" in modules:
            lines.append("")
            lines.append(
                "# Shell commands write straight to the log: flush Python's own output "
                "line by line so the two keep their order."
            )
            lines.append('if hasattr(_cp_sys.stdout, "reconfigure"):')
            lines.append("    _cp_sys.stdout.reconfigure(line_buffering=True)")
        for helper in sorted(self.helpers):
            lines.append("")
            lines.append("")
            lines.append(_HELPERS[helper][0].rstrip("\n"))
        return "\n".join(lines) + "\n"

    def finish_report(self) -> None:
        self.report.magics = sorted(self._magics)
        self.report.automagic_cells = sorted(self._automagic)


def _is_primary(expression: str) -> bool:
    """True when the expression binds tighter than any operator, so needs no parentheses."""
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return False
    return isinstance(
        node,
        (
            ast.Call,
            ast.Attribute,
            ast.Name,
            ast.Subscript,
            ast.Constant,
            ast.List,
            ast.Dict,
            ast.Set,
        ),
    ) and not expression.startswith("-")


def _literal_type(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "any"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and _json_compatible(value):
        return "list"
    if isinstance(value, dict) and _json_compatible(value):
        return "dict"
    return "any"


def _json_compatible(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_compatible(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_compatible(v) for k, v in value.items())
    return False


# ---------------------------------------------------------------------------------------------
# nbconvert


_SCRIPT_TEMPLATE = """{%- extends 'python/index.py.j2' -%}
{%- block header -%}
{{ resources.cloudpromote_preamble }}
{%- endblock header -%}
{% block in_prompt %}{% endblock in_prompt %}
{% block input %}
{{ cell.source }}
{% endblock input %}
"""


class CloudPromotePreprocessor(Preprocessor):
    """Replace every code cell's source with its plain-Python conversion; drop other cells.

    The exporter validates the notebook after each preprocessor, so the result is a fresh,
    minimal notebook with deterministic cell ids rather than an edited copy of the user's.
    """

    def __init__(self, converter: _NotebookConverter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.converter = converter

    def preprocess(
        self, nb: nbformat.NotebookNode, resources: dict[str, Any]
    ) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
        converter = self.converter
        converter.prepass()
        converter.find_parameters()
        cells = []
        for index, cell in enumerate(nb.cells):
            if cell.get("cell_type") != "code":
                continue
            text = converter.convert_cell(index, cell)
            if index == converter.parameters_cell:
                converter.extract_parameters()
                text += "\n" + converter.parameters_code()
            cells.append(nbformat.v4.new_code_cell(source=text, id=f"cloudpromote-{index}"))
        converter.finish_report()
        clean = nbformat.v4.new_notebook(cells=cells)
        clean.metadata["language_info"] = {"name": "python"}
        resources["cloudpromote_preamble"] = converter.preamble()
        return clean, resources


def _export(nb: nbformat.NotebookNode, converter: _NotebookConverter) -> str:
    exporter = PythonExporter(
        raw_template=_SCRIPT_TEMPLATE,
        exclude_markdown=True,
        exclude_raw=True,
        exclude_input_prompt=True,
    )
    exporter.register_preprocessor(CloudPromotePreprocessor(converter), enabled=True)
    body, _ = exporter.from_notebook_node(copy.deepcopy(nb), resources={})
    # Cell texts start with a newline and the preamble ends with one: two blank lines between.
    return body.rstrip("\n") + "\n"


def convert_notebook_with_report(
    nb: nbformat.NotebookNode, notebook_name: str = "notebook.ipynb"
) -> tuple[ConvertedNotebook, ConversionReport]:
    """convert_notebook, plus what was seen on the way (magic names, shell escape counts)."""
    converter = _NotebookConverter(copy.deepcopy(nb), notebook_name)
    script = _export(converter.nb, converter)
    # Each cell compiles alone; whatever could still break the whole file is a bug here, but
    # the promise is a script that compiles, so check and fall back to commenting out.
    script = _ensure_compiles(script, converter, notebook_name)
    converted = ConvertedNotebook(
        script=script,
        parameters=converter.parameters,
        parameters_cell=converter.parameters_cell,
        findings=converter.findings,
        pip_requirements=converter.pip_requirements,
        referenced_files=converter.referenced_files,
        needs_ipython=converter.needs_ipython,
        cell_sources=dict(sorted(converter.cell_sources.items())),
    )
    return converted, converter.report


def _ensure_compiles(script: str, converter: _NotebookConverter, notebook_name: str) -> str:
    for _ in range(len(converter.nb.cells) + 1):
        try:
            compile(script, notebook_name, "exec", dont_inherit=True)
            return script
        except (SyntaxError, ValueError) as exc:
            lineno = getattr(exc, "lineno", None) or 1
            lines = script.split("\n")
            start = lineno - 1
            while start > 0 and not lines[start].startswith("# %% cell "):
                start -= 1
            end = start + 1
            while end < len(lines) and not lines[end].startswith("# %% "):
                end += 1
            match = re.match(r"# %% cell (\d+)", lines[start])
            converter.cell = int(match.group(1)) if match else 0
            converter._find(
                Severity.ERROR,
                "syntax-error",
                f"Cell {converter.cell} broke the generated script ({exc}); it is commented out.",
                "Report this to jupyter-cloudpromote with the cell's code; meanwhile tag the "
                f"cell {SKIP_TAG}.",
            )
            commented = [lines[start], *_comment_lines("\n".join(lines[start + 1 : end]))]
            script = "\n".join(lines[:start] + commented + lines[end:])
    return script


def convert_notebook(
    nb: nbformat.NotebookNode, notebook_name: str = "notebook.ipynb"
) -> ConvertedNotebook:
    """Turn a notebook into a plain Python script plus what was learnt on the way.

    The input notebook is never modified. The same notebook always gives the same bytes.
    """
    converted, _ = convert_notebook_with_report(nb, notebook_name)
    return converted


# ---------------------------------------------------------------------------------------------
# Parameters from the command line

_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _coerce_one(parameter: Parameter, text: str) -> Any:
    kind = parameter.type
    expected = {
        "int": "an integer, e.g. 10",
        "float": "a number, e.g. 0.5",
        "bool": "true or false (also yes/no, 1/0)",
        "list": 'a JSON list, e.g. [1, 2] or ["a", "b"]',
        "dict": 'a JSON object, e.g. {"key": 1}',
    }.get(kind, "")

    def wrong() -> ParameterError:
        return ParameterError(
            f"Parameter {parameter.name} expects {expected} (its default in the notebook is "
            f"{parameter.default_source or repr(parameter.default)}), but got {text!r}.",
            f"Pass a value of that type, e.g. --param {parameter.name}=<value>.",
        )

    stripped = text.strip()
    if kind == "int":
        if not re.fullmatch(r"[+-]?\d[\d_]*", stripped):
            raise wrong()
        return int(stripped)
    if kind == "float":
        try:
            value = float(stripped)
        except ValueError:
            raise wrong() from None
        if not math.isfinite(value) or not re.fullmatch(r"[+-]?[\d_.]+([eE][+-]?\d+)?", stripped):
            raise wrong()
        return value
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in _TRUE_WORDS:
            return True
        if lowered in _FALSE_WORDS:
            return False
        raise wrong()
    if kind == "str":
        return text
    if kind in ("list", "dict"):
        try:
            value = _load_json(stripped)
        except ValueError:
            raise wrong() from None
        if not isinstance(value, list if kind == "list" else dict):
            raise wrong()
        return value
    try:  # "none" and "any": JSON when it is JSON, else the text itself
        return _load_json(stripped)
    except ValueError:
        return text


def coerce_parameters(parameters: list[Parameter], raw: dict[str, str]) -> dict[str, Any]:
    """Type the --param NAME=VALUE strings by the parameters cell's defaults.

    Returns JSON-serialisable values, ready for $CLOUDPROMOTE_PARAMETERS.
    """
    if not raw:
        return {}
    if not parameters:
        names = ", ".join(sorted(raw))
        raise ParameterError(
            f"The notebook has no parameters cell, so the parameter(s) {names} cannot be set.",
            f"Tag the cell that assigns them with `{PARAMETERS_TAG}` (in JupyterLab: select the "
            "cell, open the property inspector, add the tag), save, and promote again.",
        )
    by_name = {parameter.name: parameter for parameter in parameters}
    values: dict[str, Any] = {}
    for name in sorted(raw):
        if name not in by_name:
            valid = ", ".join(sorted(by_name))
            raise ParameterError(
                f"Unknown parameter {name!r}: the parameters cell does not assign it. "
                f"Valid parameters: {valid}.",
                f"Use one of those names, or add `{name} = <default>` to the cell tagged "
                f"`{PARAMETERS_TAG}`.",
            )
        values[name] = _coerce_one(by_name[name], raw[name])
    return values
