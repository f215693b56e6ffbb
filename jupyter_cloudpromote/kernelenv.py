"""Find the notebook's kernel and read what its Python environment has installed.

The requirements of a job are pinned to the versions the notebook was developed against,
which are the ones in the kernel's environment, not in the environment running this code.
So the kernel's own interpreter is run once with a small probe script and reports, as JSON,
its version, its installed distributions and which distribution provides which import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import nbformat

from .errors import KernelNotFoundError
from .models import KernelEnvironment

DEFAULT_KERNEL_NAME = "python3"
PROBE_TIMEOUT_SECONDS = 120

# Run with `python -I -c PROBE_SCRIPT`: isolated mode, so neither the user's current folder nor
# PYTHON* variables change what the kernel's interpreter reports. It must run on old Pythons
# too (3.8+), so it only uses the standard library and no newer syntax.
PROBE_SCRIPT = r"""
import json, os, platform, re, site, sys, sysconfig
import importlib.metadata as md

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")
dists = {}
providers = {}
dist_files = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if not name:
        continue
    key = canonical(name)
    if key in dists:
        continue  # the first one on sys.path wins, as for imports
    dists[key] = {"name": name, "version": dist.version}
    parts_list = []
    for f in dist.files or ():
        parts = f.parts
        if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".egg-info", ".data")):
            continue
        if "__pycache__" in parts or not parts[-1].endswith(MODULE_SUFFIXES):
            continue
        parts_list.append(parts)
    dist_files[key] = parts_list

# Which dotted folders hold files of more than one distribution: namespace packages such as
# google, google.cloud, azure, mpl_toolkits (also old pkg_resources-style ones that ship an
# __init__ in every distribution). Below them, each distribution's own first folder or module
# is what it provides: google-cloud-storage -> google.cloud.storage.
owners = {}
for key, parts_list in dist_files.items():
    for parts in parts_list:
        for i in range(1, len(parts)):
            owners.setdefault(".".join(parts[:i]), set()).add(key)

namespace = {}
for key, parts_list in dist_files.items():
    for parts in parts_list:
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if len(owners[prefix]) == 1:
                if i > 1:
                    namespace.setdefault(prefix, set()).add(key)
                break
        else:
            module = ".".join(parts[:-1] + (parts[-1].split(".")[0],))
            if len(parts) > 1 and not module.endswith(".__init__"):
                namespace.setdefault(module, set()).add(key)

try:
    packages = md.packages_distributions()
except AttributeError:  # Python < 3.10
    packages = {}
    for dist in md.distributions():
        tops = (dist.read_text("top_level.txt") or "").split()
        for top in tops:
            packages.setdefault(top, []).append(dist.metadata["Name"])

stdlib = getattr(sys, "stdlib_module_names", None)
if stdlib is None:  # Python < 3.10: scan the standard library folder
    stdlib = set(sys.builtin_module_names)
    libdir = sysconfig.get_paths()["stdlib"]
    for entry in os.listdir(libdir):
        stem = entry.split(".")[0]
        if entry.endswith(".py") or os.path.isdir(os.path.join(libdir, entry, "")):
            stdlib.add(stem)
    dynload = os.path.join(libdir, "lib-dynload")
    if os.path.isdir(dynload):
        stdlib.update(e.split(".")[0] for e in os.listdir(dynload))
    stdlib.discard("site-packages")

site_dirs = []
for path in [sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib")]:
    if path and path not in site_dirs:
        site_dirs.append(path)
try:
    user_site = site.getusersitepackages()
    if site.ENABLE_USER_SITE and user_site not in site_dirs:
        site_dirs.append(user_site)
except AttributeError:
    pass

json.dump({
    "python_version": platform.python_version(),
    "executable": sys.executable,
    "packages_distributions": {k: sorted(set(v)) for k, v in packages.items()},
    "distributions": dists,
    "namespace_modules": {k: sorted(v) for k, v in namespace.items()},
    "stdlib": sorted(stdlib),
    "site_dirs": site_dirs,
}, sys.stdout)
"""

_cache_lock = threading.Lock()
# interpreter path -> (site-packages mtimes at probe time, probe output)
_probe_cache: dict[str, tuple[tuple[tuple[str, float], ...], dict[str, Any]]] = {}


def kernel_name_of(nb: nbformat.NotebookNode) -> str | None:
    """The kernelspec name the notebook was saved with, or None when it names none."""
    kernelspec = nb.get("metadata", {}).get("kernelspec") or {}
    name = kernelspec.get("name") if hasattr(kernelspec, "get") else None
    return name if isinstance(name, str) and name else None


def find_kernel_environment(kernel_name: str | None) -> KernelEnvironment:
    """Locate the kernel `kernel_name` (None: this Python) and probe its environment."""
    if kernel_name is None:
        python = sys.executable
        name = DEFAULT_KERNEL_NAME
    else:
        name = kernel_name
        python = _interpreter_of_kernel(kernel_name)
    data = _probe(python, name)
    packages = {k: list(v) for k, v in data["packages_distributions"].items()}
    versions = {key: info["version"] for key, info in data["distributions"].items()}
    return KernelEnvironment(
        kernel_name=name,
        python=python,
        python_version=data["python_version"],
        packages_distributions=packages,
        versions=versions,
        stdlib=frozenset(data["stdlib"]),
        namespace_modules={k: list(v) for k, v in data["namespace_modules"].items()},
    )


def clear_cache() -> None:
    """Forget every probed environment (tests; a long-running server never needs it)."""
    with _cache_lock:
        _probe_cache.clear()


def _installed_kernels() -> list[str]:
    from jupyter_client.kernelspec import KernelSpecManager

    try:
        return sorted(KernelSpecManager().find_kernel_specs())
    except Exception:  # listing is only for the message; never mask the real error
        return []


def _interpreter_of_kernel(kernel_name: str) -> str:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        installed = _installed_kernels()
        listing = ", ".join(installed) if installed else "none"
        raise KernelNotFoundError(
            f"The notebook's kernel '{kernel_name}' is not installed "
            f"(installed kernels: {listing}).",
            f"Install it with `python -m ipykernel install --user --name {kernel_name}`, "
            "or pass --kernel NAME with one of the installed kernels.",
        ) from None
    if (spec.language or "").lower() != "python":
        raise KernelNotFoundError(
            f"Kernel '{kernel_name}' runs {spec.language or 'an unknown language'}; "
            "only Python kernels are supported.",
            "Pick a Python kernel for the notebook, or pass --kernel NAME with a Python kernel.",
        )
    if not spec.argv:
        raise KernelNotFoundError(
            f"Kernel '{kernel_name}' has an empty argv in {spec.resource_dir}/kernel.json.",
            f"Reinstall it with `python -m ipykernel install --user --name {kernel_name}`.",
        )
    return _resolve_interpreter(spec.argv[0], kernel_name)


def _resolve_interpreter(argv0: str, kernel_name: str) -> str:
    # jupyter_client launches a spec whose argv[0] is a bare python/python3/python3.X (the
    # current version) with sys.executable; that covers ipykernel's bundled python3 spec.
    # Anything else bare is looked up on PATH, as the launcher's exec would.
    bare_names = {
        "python",
        f"python{sys.version_info[0]}",
        "python{}.{}".format(*sys.version_info[:2]),
    }
    if argv0 in bare_names:
        return sys.executable
    if os.sep in argv0 or (os.altsep and os.altsep in argv0):
        path = Path(argv0).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise KernelNotFoundError(
            f"Kernel '{kernel_name}' points at the interpreter {argv0}, which does not exist "
            "or cannot be run.",
            "Recreate that environment, or reinstall the kernel from the right environment with "
            f"`python -m ipykernel install --user --name {kernel_name}`.",
        )
    found = shutil.which(argv0)
    if found is None:
        raise KernelNotFoundError(
            f"Kernel '{kernel_name}' runs `{argv0}`, which is not on PATH.",
            "Reinstall the kernel with an absolute interpreter path: "
            f"`/path/to/python -m ipykernel install --user --name {kernel_name}`.",
        )
    return found


def _site_stamp(site_dirs: list[str]) -> tuple[tuple[str, float], ...]:
    # Installing or removing a distribution adds or removes a *.dist-info folder, which
    # changes the mtime of the site-packages folder: a cheap staleness check.
    stamp = []
    for directory in site_dirs:
        try:
            stamp.append((directory, os.stat(directory).st_mtime))
        except OSError:
            stamp.append((directory, -1.0))
    return tuple(stamp)


def _probe(python: str, kernel_name: str) -> dict[str, Any]:
    with _cache_lock:
        cached = _probe_cache.get(python)
    if cached is not None:
        stamp, data = cached
        if _site_stamp([d for d, _ in stamp]) == stamp:
            return data
    data = _run_probe(python, kernel_name)
    with _cache_lock:
        _probe_cache[python] = (_site_stamp(data["site_dirs"]), data)
    return data


def _run_probe(python: str, kernel_name: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    try:
        proc = subprocess.run(
            [python, "-I", "-c", PROBE_SCRIPT],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelNotFoundError(
            f"Could not run the interpreter of kernel '{kernel_name}' ({python}): {exc}.",
            "Check that the kernel's environment still exists, or pass --kernel NAME.",
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise KernelNotFoundError(
            f"The interpreter of kernel '{kernel_name}' ({python}) failed to report its "
            f"packages (exit code {proc.returncode}): {tail}",
            "Check that this is a working Python 3.8+ interpreter, or pass --kernel NAME.",
        )
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise KernelNotFoundError(
            f"The interpreter of kernel '{kernel_name}' ({python}) printed something other "
            f"than the expected report: {proc.stdout[:200]!r}",
            "Check that its startup (sitecustomize, .pth files) prints nothing, "
            "or pass --kernel NAME.",
        ) from exc
    return data
