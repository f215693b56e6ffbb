"""`jupyter cloudpromote ...`: a thin command line over JobManager.

Human-readable output by default; with --json, stdout holds exactly one JSON document and
all progress goes to stderr. Exit codes: 0 ok, 1 the job failed or was cancelled (--wait),
2 bad input or configuration (the message says what to do).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .backends.registry import backends_report
from .errors import CloudPromoteError
from .jobs import JobManager
from .models import JobRecord, JobState, PromotionOptions, Resources
from .resources import validate_resources

EXIT_OK, EXIT_JOB_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CloudPromoteError(
                f"{flag} {item!r} is not KEY=VALUE.", f"Write it as {flag} name=value."
            )
        pairs[key.strip()] = value
    return pairs


def add_promotion_arguments(
    parser: argparse.ArgumentParser, *, submit: bool, notebook_argument: bool = True
) -> None:
    """The options shared by preview, submit and %cloud_submit (which finds its notebook)."""
    if notebook_argument:
        parser.add_argument("notebook", help="path of the .ipynb to promote")
    parser.add_argument("--backend", help="profile name or backend kind (default: configured)")
    parser.add_argument(
        "--option", action="append", metavar="KEY=VALUE", help="override one profile setting"
    )
    parser.add_argument("--base-image", help="base image for container builds")
    parser.add_argument(
        "--param", action="append", metavar="NAME=VALUE", help="override a parameters-cell value"
    )
    parser.add_argument("--cpus", type=float, help="CPUs for the job")
    parser.add_argument("--memory", help="memory limit, e.g. 4G or 512M")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs for the job")
    parser.add_argument("--time", dest="time_limit", help="time limit, e.g. 30m, 2h, 1:30:00")
    parser.add_argument(
        "--include", action="append", metavar="PATH", help="file or folder beside the notebook"
    )
    parser.add_argument("--kernel", help="kernel whose environment pins the requirements")
    parser.add_argument(
        "--input",
        metavar="PATH|URI",
        help="data made available to the job (a local folder or an s3:// URI; cloud backends)",
    )
    parser.add_argument(
        "--requirement",
        action="append",
        dest="requirements",
        metavar="LINE",
        help="use this requirement instead of the detected ones (repeat for each line)",
    )
    if submit:
        parser.add_argument(
            "--env", action="append", metavar="NAME=VALUE", help="environment variable for the job"
        )
        parser.add_argument("--force", action="store_true", help="submit despite error findings")
        parser.add_argument(
            "--wait", action="store_true", help="follow the job until it ends, then report it"
        )


def promotion_options(args: argparse.Namespace) -> PromotionOptions:
    options = parse_pairs(args.option, "--option")
    if getattr(args, "input", None):
        # A local path is taken from where the command runs; a URI is passed through.
        is_uri = "://" in args.input
        options["input"] = args.input if is_uri else str(Path(args.input).resolve())
    resources = Resources(
        cpus=args.cpus, memory=args.memory, gpus=args.gpus or 0, time_limit=args.time_limit
    )
    validate_resources(resources)
    return PromotionOptions(
        backend=args.backend,
        options=options,
        parameters=parse_pairs(args.param, "--param"),
        resources=resources,
        include=list(args.include or []),
        env=parse_pairs(getattr(args, "env", None), "--env"),
        base_image=args.base_image,
        kernel=args.kernel,
        force=getattr(args, "force", False),
        requirements=getattr(args, "requirements", None),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter cloudpromote",
        description="Promote a notebook into a batch job, and watch it.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print one JSON document")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    preview = verbs.add_parser(
        "preview", parents=[json_flag], help="show findings, requirements, script, Dockerfile"
    )
    add_promotion_arguments(preview, submit=False)
    preview.add_argument("--script", action="store_true", help="also print the script")
    preview.add_argument("--dockerfile", action="store_true", help="also print the Dockerfile")

    submit = verbs.add_parser("submit", parents=[json_flag], help="promote and submit a notebook")
    add_promotion_arguments(submit, submit=True)

    listing = verbs.add_parser("list", parents=[json_flag], help="list jobs, newest first")
    listing.add_argument("--status", action="append", choices=[s.value for s in JobState])
    listing.add_argument("--backend")
    listing.add_argument("--limit", type=int, default=50)

    for name, text in (
        ("status", "show a job and its history"),
        ("cancel", "cancel a job"),
    ):
        verb = verbs.add_parser(name, parents=[json_flag], help=text)
        verb.add_argument("job_id")
    rerun = verbs.add_parser("rerun", parents=[json_flag], help="run a job again as packaged")
    rerun.add_argument("job_id")
    rerun.add_argument("--wait", action="store_true")
    logs = verbs.add_parser("logs", parents=[json_flag], help="print a job's build and run logs")
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    outputs = verbs.add_parser("outputs", parents=[json_flag], help="list or fetch outputs")
    outputs.add_argument("job_id")
    outputs.add_argument("--dest", help="copy the outputs into this folder")
    verbs.add_parser("backends", parents=[json_flag], help="profiles, availability, hints")
    return parser


class _Console:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def progress(self, message: str) -> None:
        print(f"[cloudpromote] {message}", file=sys.stderr, flush=True)

    def emit(self, data: Any, human: str) -> None:
        if self.as_json:
            json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
            sys.stdout.write("\n")
        else:
            print(human)


def _duration(record: JobRecord) -> str:
    end = record.updated if record.state.terminal else time.time()
    seconds = max(0, int(end - record.created))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _record_line(record: JobRecord) -> str:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
    return (
        f"{record.id}  {record.state.value:<10} {record.backend:<12} {created}  "
        f"{_duration(record):>8}  {Path(record.notebook).name}"
    )


def record_text(record: JobRecord) -> str:
    lines = [
        f"job       {record.id}",
        f"notebook  {record.notebook}",
        f"backend   {record.backend} ({record.backend_kind})",
        f"status    {record.state.value}",
    ]
    if record.reason:
        lines.append(f"reason    {record.reason}")
    if record.exit_code is not None:
        lines.append(f"exit code {record.exit_code}")
    if record.image:
        lines.append(f"image     {record.image}")
    lines.append(f"folder    {record.job_dir}")
    for step in record.history:
        when = time.strftime("%H:%M:%S", time.localtime(step.time))
        lines.append(f"  {when}  {step.state.value:<10} {step.reason}")
    return "\n".join(lines)


def _findings_text(findings: list[dict[str, Any]]) -> list[str]:
    lines = []
    for f in findings:
        where = f"cell {f['cell']}" if f["cell"] is not None else "notebook"
        lines.append(f"  {f['severity'].upper():<8} {where}: {f['message']}")
        if f["fix"]:
            lines.append(f"           fix: {f['fix']}")
    return lines or ["  none"]


def _run(args: argparse.Namespace, console: _Console) -> int:
    manager = JobManager()
    verb = args.verb
    if verb == "preview":
        data = manager.preview(args.notebook, promotion_options(args)).to_preview()
        human: list[str] = ["Findings:", *_findings_text(data["findings"]), "Requirements:"]
        human += [f"  {r}" for r in data["requirements"]] or ["  none"]
        human.append(f"Python {data['python_version']}, base image {data['base_image']}")
        if data["cost_estimate"]:
            human.append(f"Cost estimate: {data['cost_estimate']['summary']}")
        if data["parameters"]:
            human.append("Parameters:")
            human += [
                f"  {p['name']} = {p['default_source']}  ({p['type']})" for p in data["parameters"]
            ]
        if args.script:
            human += ["Script:", data["script"]]
        if args.dockerfile:
            human += ["Dockerfile:", data["dockerfile"]]
        console.emit(data, "\n".join(human))
        return EXIT_OK
    if verb == "submit":
        record = manager.submit(args.notebook, promotion_options(args), console.progress)
        return _finish(manager, record, args.wait, console)
    if verb == "rerun":
        record = manager.rerun(args.job_id, console.progress)
        return _finish(manager, record, args.wait, console)
    if verb == "list":
        states = [JobState(s) for s in args.status or []]
        records = [
            manager.refresh(r.id)
            for r in manager.list(states=states or None, backend=args.backend, limit=args.limit)
        ]
        console.emit(
            {"jobs": [r.to_dict(with_history=False) for r in records]},
            "\n".join(_record_line(r) for r in records)
            or "No jobs yet: try `jupyter cloudpromote submit NOTEBOOK`.",
        )
        return EXIT_OK
    if verb == "status":
        record = manager.refresh(args.job_id)
        console.emit(record.to_dict(), record_text(record))
        return EXIT_OK
    if verb == "cancel":
        record = manager.cancel(args.job_id)
        console.emit(record.to_dict(), f"job {record.id}: {record.state.value}")
        return EXIT_OK
    if verb == "logs":
        return _logs(manager, args, console)
    if verb == "outputs":
        record = manager.get(args.job_id)
        files = manager.outputs(record.id)
        copied = [str(p) for p in manager.copy_outputs(record.id, args.dest)] if args.dest else []
        text = "\n".join(f"{f['size']:>10}  {f['path']}" for f in files) or "No outputs."
        if args.dest:
            text += f"\ncopied {len(copied)} file(s) to {args.dest}"
        console.emit({"id": record.id, "outputs": files, "copied": copied}, text)
        return EXIT_OK
    if verb == "backends":
        return _backends(manager, console)
    raise AssertionError(verb)


def _finish(manager: JobManager, record: JobRecord, wait: bool, console: _Console) -> int:
    if wait and not record.state.terminal:

        def stream(text: str) -> None:
            sys.stderr.write(text)
            sys.stderr.flush()

        record = manager.wait(record.id, console.progress, stream_logs=stream)
    data = record.to_dict()
    console.emit(data, record_text(record))
    if record.state in (JobState.FAILED, JobState.CANCELLED) or (
        wait and record.state is not JobState.SUCCEEDED
    ):
        return EXIT_JOB_FAILED
    return EXIT_OK


def _logs(manager: JobManager, args: argparse.Namespace, console: _Console) -> int:
    record = manager.get(args.job_id)
    if args.follow and not console.as_json:
        sys.stdout.write(manager.build_logs(record.id))
        for chunk in manager.follow_logs(record.id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return EXIT_OK
    build, run = manager.build_logs(record.id), manager.run_logs(record.id)
    console.emit({"id": record.id, "build": build, "run": run}, build + run)
    return EXIT_OK


def _backends(manager: JobManager, console: _Console) -> int:
    settings = manager.settings
    data = backends_report(settings.default_backend, settings.profiles)
    human = [f"default: {settings.default_backend}"]
    for info in data["backends"]:
        state = "available" if info["available"] else "unavailable"
        human.append(f"{info['kind']:<12} {state:<12} {info['description'] or info['message']}")
        if not info["available"] and info["message"]:
            human.append(f"{'':<12} {info['message']}")
    for profile in data["profiles"]:
        if profile["configured"]:
            human.append(f"profile {profile['name']!r}: kind {profile['kind']}")
    console.emit(data, "\n".join(human))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = _Console(getattr(args, "json", False))
    try:
        return _run(args, console)
    except CloudPromoteError as exc:
        if console.as_json:
            console.emit({"error": exc.message, "fix": exc.fix}, "")
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            "interrupted; the job (if any) keeps running: see `jupyter cloudpromote list`",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
