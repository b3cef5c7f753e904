"""``cpvctl``: parse argv -> call ``Client`` -> render -> exit code. Nothing else lives here.

Exit codes: 0 ok, 1 the operation failed (or the daemon refused it), 2 usage error (caught
locally, nothing sent), 3 the daemon is not reachable. Names, versions and stages are checked
with ``cpvctl.protocol`` before anything is sent, so a typo never costs a round trip and the
message is the same one the daemon would give.

Heavy-ish imports (http.client, the renderers) happen inside ``main`` after parsing, so
``cpvctl --version`` and ``--help`` stay at interpreter start-up cost.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from cpvctl.errors import EXIT_FAILED, EXIT_OK, CpvctlError, UsageError, validated
from cpvctl.protocol import (
    CPV_VERSION,
    ProtocolError,
    Ref,
    job_id_of,
    parse_ref,
    ref_of,
    validate_job_id,
    validate_name,
    validate_stage,
)
from cpvctl.since import HELP as SINCE_HELP
from cpvctl.since import since_arg

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs start-up time
if TYPE_CHECKING:
    from typing import Any

    from cpvctl.client import Client

ClientFactory = Callable[[str | None, float], "Client"]
Handler = Callable[[argparse.Namespace, "Client"], int]


# --- argument parsing ----------------------------------------------------------------------


_PRUNED_HELP = "restore a version retention pruned (works while gc has not deleted its objects)"
_REF_HELP = (
    "NAME@vX.Y[.Z], NAME@latest (newest pushed version), NAME#STAGE, or NAME (its current "
    "version)"
)


def build_parser() -> argparse.ArgumentParser:
    # Options accepted both before and after the verb. SUPPRESS keeps a sub-parser from
    # resetting a value given before the verb.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the daemon's JSON instead of tables",
    )
    common.add_argument(
        "--socket",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="daemon socket (default: $CPV_SOCKET or the platform runtime dir)",
    )

    parser = argparse.ArgumentParser(
        prog="cpvctl",
        description="Control the CPV checkpoint-versioning daemon (cpvd).",
        epilog="exit codes: 0 ok, 1 failed, 2 usage error, 3 daemon not reachable",
    )
    parser.add_argument("--version", action="version", version=f"cpvctl {CPV_VERSION}")
    parser.add_argument(
        "--json",
        action="store_true",
        default=False,
        help="print the daemon's JSON instead of tables",
    )
    parser.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="daemon socket (default: $CPV_SOCKET or the platform runtime dir)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for each daemon answer (default 30)",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    p = verb("status", "queue, jobs, watches, storage and checkpoints waiting to be versioned")
    p.add_argument(
        "--ignored",
        action="store_true",
        help="also list the files in watches that are no checkpoint unit, and why",
    )
    verb("artifacts", "list artifacts with their latest version")
    p = verb("versions", "list the versions of an artifact, newest first")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--all", action="store_true", help="include versions pruned by retention")
    p = verb("show", "show one version (metadata, metrics, stages, lineage)")
    p.add_argument("ref", metavar="REF", help=_REF_HELP)

    p = verb("push", "submit a checkpoint file or directory as a new version")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--artifact", "-a", required=True, metavar="NAME")
    p.add_argument("--metrics", metavar="JSON", help='metrics as a JSON object, e.g. {"acc": 0.9}')
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="K=V",
        help="one metric (repeatable); numbers stay numbers",
    )
    p.add_argument("--major", action="store_true", help="bump MAJOR instead of MINOR")
    p.add_argument("--wait", action="store_true", help="wait for the version and print it")
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up waiting after this long (the job goes on)",
    )

    p = verb("pull", "download a version (default: the current one) into a directory")
    p.add_argument("ref", metavar="REF", help=_REF_HELP)
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--force", action="store_true", help="replace a different existing copy")
    p.add_argument("--include-pruned", action="store_true", help=_PRUNED_HELP)

    p = verb("revert", "restore a version's bytes and point the registry back at it")
    p.add_argument("name", metavar="REF", help=_REF_HELP)
    p.add_argument("version", metavar="VERSION", nargs="?", help="vX.Y[.Z], latest or '#STAGE'")
    p.add_argument("--with-data", action="store_true", help="also revert its data lineage")
    p.add_argument("--to", metavar="DIR", help="restore into DIR instead of the original place")
    p.add_argument("--include-pruned", action="store_true", help=_PRUNED_HELP)

    p = verb("promote", "move a stage label (prod, best, ...) to a version")
    p.add_argument("ref", metavar="REF", help=_REF_HELP)
    p.add_argument("stage", metavar="STAGE")
    p.add_argument("--with-data", action="store_true", help="also promote its data lineage")

    p = verb("pause", "stop versioning (one artifact's watches, or all)")
    p.add_argument("name", metavar="NAME", nargs="?")
    p = verb("resume", "resume versioning (one artifact's watches, or all)")
    p.add_argument("name", metavar="NAME", nargs="?")

    p = verb("events", "print recent events and exit; --follow for new ones (Ctrl-C to stop)")
    p.add_argument("--since", type=since_arg, metavar="DURATION_OR_TIME", help=SINCE_HELP)
    p.add_argument("--count", "-n", type=_positive_int, metavar="N", help="newest N (default 20)")
    p.add_argument("--follow", "-f", action="store_true", help="then follow until interrupted")

    p = verb("verify", "check that stored objects exist and match their md5")
    p.add_argument("--sample", type=_positive_int, metavar="N", help="check N random versions")
    p.add_argument("--artifact", metavar="NAME")

    p = verb("gc", "delete stored objects no kept version references (older than the grace)")
    p.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")

    p = verb("retry", "re-queue a failed job")
    p.add_argument("job_id", metavar="JOB_ID")
    p = verb("job", "show one job")
    p.add_argument("job_id", metavar="JOB_ID")

    p = verb("ui", "serve the local page on 127.0.0.1 and print its address")
    p.add_argument("--port", type=_port, default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the address")
    p = verb("hooks", "list hooks and their deliveries; `hooks test NAME` sends a sample event")
    p.add_argument("action", nargs="?", choices=["list", "test"], default="list")
    p.add_argument("name", nargs="?", metavar="NAME")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# --- local validation ----------------------------------------------------------------------


def _port(text: str) -> int:
    value = 0 if text == "0" else _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, not {value}")
    return value


def _ref(text: str, version: str | None = None) -> Ref:
    """A reference (see ``_REF_HELP``), or a bare name plus ``version``; exit 2 when bad."""
    if version is None:
        return validated_ref(parse_ref, text)
    return validated_ref(lambda name: ref_of(name, version), text)


def validated_ref(parse: Callable[[str], Ref], text: str) -> Ref:
    try:
        return parse(text)
    except ProtocolError as e:
        raise UsageError(e.message, code=e.code) from None


def parse_metrics(metrics_json: str | None, pairs: Sequence[str]) -> dict[str, Any] | None:
    """``--metrics '{"acc": 0.9}'`` merged with ``--metric loss=0.1`` (pairs win)."""
    import json

    result: dict[str, Any] = {}
    if metrics_json:
        try:
            loaded = json.loads(metrics_json)
        except ValueError as e:
            raise UsageError(f"--metrics is not valid JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise UsageError('--metrics must be a JSON object, e.g. {"acc": 0.93}')
        result.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metric expects KEY=VALUE, got {pair!r}")
        result[key.strip()] = _metric_value(raw.strip())
    return result or None


def _metric_value(raw: str) -> Any:
    import json

    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, int | float | bool) or value is None else raw


# --- verbs ---------------------------------------------------------------------------------


def _print_json(data: Any, indent: int | None = 2) -> None:
    import json

    print(json.dumps(data, indent=indent), flush=True)


def _emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    if args.json:
        _print_json(data)
    else:
        print(human(data))


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_ignored, render_status

    if not args.ignored:
        _emit(args, client.status(), render_status)
    else:
        _emit(args, client.status(ignored=True), lambda d: render_status(d) + render_ignored(d))
    return EXIT_OK


def cmd_artifacts(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_artifacts

    _emit(args, client.artifacts(), render_artifacts)
    return EXIT_OK


def cmd_versions(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_versions

    name = validated(validate_name, args.name)
    versions = client.versions(name, all=True) if args.all else client.versions(name)
    _emit(args, versions, render_versions)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_show

    ref = _ref(args.ref)
    _emit(args, client.show(ref.name, ref.selector), render_show)
    return EXIT_OK


def cmd_push(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_job

    artifact = validated(validate_name, args.artifact)
    metrics = parse_metrics(args.metrics, args.metric)
    path = os.path.abspath(args.path)
    if not os.path.exists(path):
        raise UsageError(f"no such file or directory: {args.path}")
    job = client.push(path, artifact, metrics=metrics, bump="major" if args.major else "minor")
    job_id = job_id_of(job)
    if job_id is None:
        raise CpvctlError(f"cpvd answered the push without a job id: {job!r}", "bad_answer")
    if not args.wait:
        if args.json:
            _print_json(job)
        else:
            print(f"queued job {job_id}: {artifact} <- {path}")
            print(f"follow it with: cpvctl job {job_id}")
        return EXIT_OK
    final = _wait_with_progress(client, job_id, f"push {artifact}", args.wait_timeout)
    state = final.get("state")
    if args.json:
        _print_json(final)
    elif state == "done":
        print(f"{artifact}@{final.get('version')}  (job {job_id})")
    elif state == "unchanged":
        print(f"unchanged: content equals {artifact}@{final.get('version')}; no new version")
    else:
        print(f"cpvctl: not versioned: {render_job(final)}", file=sys.stderr)
    return EXIT_OK if state in ("done", "unchanged") else EXIT_FAILED


def _wait_with_progress(
    client: Client, job_id: str, label: str, timeout: float | None
) -> dict[str, Any]:
    from cpvctl.progress import Progress

    bar = Progress(label)

    def on_event(event: str, data: dict[str, Any]) -> None:
        if event == "progress" and isinstance(data.get("bytes"), int):
            total = data.get("total")
            bar.update(data["bytes"], total if isinstance(total, int) else None)

    try:
        return client.wait(job_id, timeout=timeout, on_event=on_event)
    finally:
        bar.finish()


def cmd_pull(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.progress import Progress

    ref = _ref(args.ref)
    bar = Progress(f"pull {ref}")
    try:
        result = client.pull_detailed(
            ref.name,
            ref.selector,
            args.output,
            progress=bar.update,
            force=args.force,
            include_pruned=args.include_pruned,
        )
    finally:
        bar.finish()
    if args.json:
        _print_json(
            {
                "artifact": result.artifact,
                "version": result.version,
                "kind": result.kind,
                "path": str(result.path),
                "already_present": result.already_present,
            }
        )
    elif result.already_present:
        print(f"{result.path}  (already {result.artifact}@{result.version}, nothing downloaded)")
    else:
        print(f"{result.path}  ({result.artifact}@{result.version})")
    return EXIT_OK


def cmd_revert(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_reverted

    ref = _ref(args.name, args.version)
    if ref.is_current:
        raise UsageError(
            f"name the version to revert to, e.g. {ref.name}@v1.2 or {ref.name}#prod",
            code="bad_request",
        )
    to = os.path.abspath(args.to) if args.to else None
    answer = client.revert(
        ref.name, ref.selector, with_data=args.with_data, to=to, include_pruned=args.include_pruned
    )
    _emit(args, answer, render_reverted)
    return EXIT_OK


def cmd_promote(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_promoted

    ref = _ref(args.ref)
    stage = validated(validate_stage, args.stage)
    answer = client.promote(ref.name, ref.selector, stage, with_data=args.with_data)
    _emit(args, answer, render_promoted)
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_paused

    name = None if args.name is None else validated(validate_name, args.name)
    _emit(args, client.pause(name), render_paused)
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_paused

    name = None if args.name is None else validated(validate_name, args.name)
    _emit(args, client.resume(name), render_paused)
    return EXIT_OK


def cmd_events(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.eventlog import print_events

    try:
        print_events(
            client,
            since=args.since,
            count=args.count,
            follow=args.follow,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
        )
    except KeyboardInterrupt:
        return EXIT_OK  # the normal way to stop following
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_verify

    artifact = None if args.artifact is None else validated(validate_name, args.artifact)
    result = client.verify(sample=args.sample, artifact=artifact)
    _emit(args, result, render_verify)
    return EXIT_FAILED if result.get("missing") or result.get("corrupt") else EXIT_OK


def cmd_gc(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.gc import render_gc, run_gc

    _emit(args, run_gc(client, args.dry_run), render_gc)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_job

    _emit(args, client.retry(validated(validate_job_id, args.job_id)), render_job)
    return EXIT_OK


def cmd_job(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render import render_job

    job = client.job(validated(validate_job_id, args.job_id))
    _emit(args, job, render_job)
    return EXIT_FAILED if job.get("state") == "failed" else EXIT_OK


def cmd_ui(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.ui.command import cmd_ui as serve_ui

    return serve_ui(args, client)


def cmd_hooks(args: argparse.Namespace, client: Client) -> int:
    from cpvctl.render_hooks import render_hook_test, render_hooks

    if args.action == "list":
        if args.name is not None:
            raise UsageError("`cpvctl hooks` takes no name; did you mean `cpvctl hooks test NAME`?")
        _emit(args, client.hooks(), render_hooks)
        return EXIT_OK
    if args.name is None:
        raise UsageError("`cpvctl hooks test` needs the NAME of a hook (see `cpvctl hooks`)")
    result = client.hook_test(args.name)
    _emit(args, result, render_hook_test)
    return EXIT_OK if result.get("ok") else EXIT_FAILED


HANDLERS: dict[str, Handler] = {
    "status": cmd_status,
    "artifacts": cmd_artifacts,
    "versions": cmd_versions,
    "show": cmd_show,
    "push": cmd_push,
    "pull": cmd_pull,
    "revert": cmd_revert,
    "promote": cmd_promote,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "events": cmd_events,
    "verify": cmd_verify,
    "gc": cmd_gc,
    "retry": cmd_retry,
    "job": cmd_job,
    "ui": cmd_ui,
    "hooks": cmd_hooks,
}


def _default_client(socket_path: str | None, timeout: float) -> Client:
    from cpvctl.client import Client

    return Client(socket_path, timeout=timeout)


def main(argv: Sequence[str] | None = None, *, client_factory: ClientFactory | None = None) -> int:
    """Run one cpvctl command; returns the exit code (the console script exits with it).

    ``client_factory(socket_path, timeout)`` lets tests substitute the client.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # fast path: no parser, no socket
        print(f"cpvctl {CPV_VERSION}")
        return EXIT_OK
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help/--version exit 0
        return e.code if isinstance(e.code, int) else EXIT_FAILED
    factory = client_factory or _default_client
    try:
        client = factory(args.socket, args.timeout)
        return HANDLERS[args.verb](args, client)
    except CpvctlError as e:
        return _report(args, e)
    except KeyboardInterrupt:
        print("cpvctl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (`cpvctl events | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:
        message = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        return _report(args, CpvctlError(message, code="io"))


def _report(args: argparse.Namespace, error: CpvctlError) -> int:
    """Print ``error`` on stderr (as one JSON object when ``--json`` was given, so a script
    parses failures like answers) and return its exit code."""
    if getattr(args, "json", False):
        import json

        print(json.dumps(error.to_json()), file=sys.stderr)
    else:
        print(f"cpvctl: {error.message}", file=sys.stderr)
    return error.exit_code
