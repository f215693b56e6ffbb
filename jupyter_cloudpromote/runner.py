"""The job's entry point, copied into every build context as `_cloudpromote_runner.py`.

It runs the converted script the way a fresh kernel would have run the notebook: a
non-interactive matplotlib backend, `display()` available as a builtin like in IPython, an
IPython shell when the script still calls `get_ipython()`, and the outputs folder created.
It must only use the standard library (plus IPython when the script needs it), because it
runs inside the job's environment, not ours.
"""

from __future__ import annotations

import builtins
import os
import runpy
import sys
import threading
import traceback

OUTPUT_DIR_ENV = "CLOUDPROMOTE_OUTPUT_DIR"
TIME_LIMIT_ENV = "CLOUDPROMOTE_TIME_LIMIT"  # seconds; for backends with no limit of their own
TIME_LIMIT_EXIT_CODE = 124  # what coreutils' timeout uses, so the reason can be recognised


def _start_time_limit() -> None:
    """Stop the whole job once its time limit passes, whatever the script is doing."""
    raw = os.environ.get(TIME_LIMIT_ENV, "")
    try:
        seconds = float(raw)
    except ValueError:
        return
    if seconds <= 0:
        return

    def expire() -> None:
        sys.stdout.flush()
        print(
            f"[cloudpromote] the job hit its time limit of {seconds:g}s and was stopped",
            file=sys.stderr,
            flush=True,
        )
        os._exit(TIME_LIMIT_EXIT_CODE)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def _display(*objs: object, **_kwargs: object) -> None:
    """Plain-text stand-in for IPython's display(), used when IPython is not installed."""
    for obj in objs:
        print(repr(obj))


def _install_display() -> None:
    try:
        from IPython.display import display
    except ImportError:
        builtins.display = _display  # type: ignore[attr-defined]
    else:
        builtins.display = display  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: _cloudpromote_runner.py SCRIPT", file=sys.stderr)
        return 2
    script = os.path.abspath(argv[1])
    os.environ.setdefault("MPLBACKEND", "Agg")
    output_dir = os.environ.get(OUTPUT_DIR_ENV)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
    _install_display()
    _start_time_limit()
    sys.argv = [script]
    sys.path.insert(0, os.path.dirname(script))
    with open(script, encoding="utf-8") as handle:
        needs_ipython = "get_ipython()" in handle.read()
    try:
        if needs_ipython:
            from IPython.core.interactiveshell import InteractiveShell

            shell = InteractiveShell.instance()
            builtins.get_ipython = lambda: shell  # type: ignore[attr-defined]
            shell.user_ns["__name__"] = "__main__"
            shell.safe_execfile(script, shell.user_ns, raise_exceptions=True, exit_ignore=True)
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    finally:
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
