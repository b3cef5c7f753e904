"""The ``cpvd`` command line: parse argv, call one core function, map errors to exit codes.

Exit codes: 0 ok, 1 the operation failed (a check, the daemon), 2 usage or config error.
Heavy modules (dvc, boto3, git, the daemon) are imported inside the verbs that need them,
so ``cpvd --version`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cpvctl.protocol import CPV_VERSION
from cpvd.errors import ConfigError, CpvError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="config file (default: $CPV_CONFIG, else the per-user config file)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpvd",
        description="CPV daemon: turns complete checkpoints into versioned, tagged artifacts.",
    )
    parser.add_argument("--version", action="version", version=f"cpvd {CPV_VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the daemon in the foreground")
    _add_config(run)
    run.add_argument("--watch", type=Path, metavar="DIR", help="watch DIR (needs --artifact)")
    run.add_argument("--artifact", metavar="NAME", help="artifact for --watch, e.g. team/model")
    run.add_argument("--kind", choices=("model", "data"), help="kind for --watch (default model)")
    run.add_argument(
        "--settle", type=float, metavar="SECONDS", help="quiet period for --watch (default 2)"
    )
    run.add_argument(
        "--rebuild-queue",
        action="store_true",
        help="move a corrupt queue database aside and start with an empty queue "
        "(versions in the registry are kept; the start-up rescan re-queues what is on disk)",
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="log verbosity on stderr (default INFO)",
    )

    check = sub.add_parser("check", help="validate config, storage and Git remote")
    _add_config(check)

    init = sub.add_parser("init", help="write a config (asks for what flags leave out)")
    _add_config(init)
    init.add_argument("--storage", metavar="URL", help="s3://bucket/prefix or a local directory")
    init.add_argument("--aws-profile", metavar="NAME", help="AWS profile for S3 storage")
    init.add_argument("--endpoint-url", metavar="URL", help="endpoint of an S3-compatible store")
    init.add_argument("--region", metavar="REGION", help="S3 region")
    init.add_argument("--remote", metavar="URL", help="Git remote of the registry")
    init.add_argument("--ssh-key", metavar="FILE", help="SSH key for the Git remote")
    init.add_argument("--watch", metavar="DIR", help="first checkpoint directory to watch")
    init.add_argument("--artifact", metavar="NAME", help="artifact name for --watch")
    init.add_argument("--kind", choices=("model", "data"), help="kind for --watch")
    init.add_argument("--force", action="store_true", help="overwrite / write despite failures")
    init.add_argument(
        "--non-interactive", action="store_true", help="never ask; use flags and defaults"
    )

    migrate = sub.add_parser(
        "migrate-storage",
        help="copy every version's objects to another storage, then switch the registry to it",
    )
    _add_config(migrate)
    migrate.add_argument("--to", required=True, metavar="URL", help="s3://bucket/prefix or a dir")
    migrate.add_argument(
        "--endpoint-url", metavar="URL", help="S3 endpoint for --to (default: the config's)"
    )
    migrate.add_argument(
        "--allow-missing",
        action="store_true",
        help="switch even when objects are missing from the old storage",
    )
    migrate.add_argument(
        "--registry", metavar="NAME", help="which [[registry]] to move (needed with several)"
    )

    service = sub.add_parser("service", help="install or remove the systemd/launchd service")
    service.add_argument("action", choices=("install", "uninstall", "status"))
    mode = service.add_mutually_exclusive_group()
    mode.add_argument("--user", dest="mode", action="store_const", const="user")
    mode.add_argument("--system", dest="mode", action="store_const", const="system")
    _add_config(service)
    service.add_argument("--dry-run", action="store_true", help="print what would be done")
    return parser


def _cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from cpvd.config.load import config_from_flags, load_config

    if args.watch is not None:
        if not args.artifact:
            parser.error("run: --watch needs --artifact NAME")
        base = load_config(args.config) if args.config is not None else None
        cfg = config_from_flags(
            args.watch,
            args.artifact,
            kind=args.kind or "model",
            settle_seconds=args.settle,
            base=base,
        )
    else:
        extra = [
            f
            for f, v in (
                ("--artifact", args.artifact),
                ("--kind", args.kind),
                ("--settle", args.settle),
            )
            if v is not None
        ]
        if extra:
            parser.error(f"run: {', '.join(extra)} only make sense with --watch DIR")
        cfg = load_config(args.config)
    from cpvd.daemon import run_daemon

    return int(run_daemon(cfg, log_level=args.log_level, rebuild_queue=args.rebuild_queue))


#: without a watch nothing is versioned: ``cpvctl push`` too reads only inside watched paths
NO_WATCH_NOTE = (
    "note: no [[watch]] configured, so nothing will be versioned: cpvd versions checkpoints "
    "only inside a [[watch]] path (`cpvctl push` too accepts only paths inside one); "
    "add a [[watch]] with path and artifact"
)


def _cmd_check(args: argparse.Namespace) -> int:
    from cpvd.config.load import load_config
    from cpvd.setup.check import format_results, run_checks

    cfg = load_config(args.config)
    print(f"config: {cfg.source or 'embedded defaults (no config file)'}")
    if not cfg.watches:
        print(NO_WATCH_NOTE)
    results = run_checks(cfg)
    print(format_results(results))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _terminal_ask(prompt: str, default: str | None) -> str:
    """The interactive ``ask`` for the wizard: ``Prompt [default]: ``."""
    suffix = f" [{default}]" if default else ""
    try:
        return input(f"{prompt}{suffix}: ")
    except EOFError:
        raise ConfigError("cpvd init: input ended before all questions were answered") from None


def _cmd_init(args: argparse.Namespace) -> int:
    from cpvd.setup.wizard import WizardAnswers, run_wizard

    answers = WizardAnswers(
        storage_url=args.storage,
        aws_profile=args.aws_profile,
        endpoint_url=args.endpoint_url,
        region=args.region,
        git_remote=args.remote,
        ssh_key=args.ssh_key,
        watch_path=args.watch,
        artifact=args.artifact,
        kind=args.kind,
        config_path=args.config,
        force=args.force,
    )
    interactive = not args.non_interactive and sys.stdin.isatty()
    run_wizard(answers, _terminal_ask if interactive else None, sys.stdout)
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    from cpvd.config.load import load_config
    from cpvd.config.views import chosen
    from cpvd.setup.migrate import migrate_storage

    cfg = chosen(load_config(args.config), args.registry)
    return migrate_storage(cfg, args.to, args.endpoint_url, args.allow_missing, sys.stdout)


def _cmd_service(args: argparse.Namespace) -> int:
    from cpvd.service.install import service_command

    return int(service_command(args.action, args.mode, args.config, args.dry_run))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cpvd`` script; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "run":
            return _cmd_run(args, parser)
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "init":
            return _cmd_init(args)
        if args.command == "migrate-storage":
            return _cmd_migrate(args)
        if args.command == "service":
            return _cmd_service(args)
        parser.error(f"unknown command {args.command!r}")
    except SystemExit as exc:  # argparse: --version, --help, usage errors
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except ConfigError as exc:
        print(f"cpvd: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except CpvError as exc:
        print(f"cpvd: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("cpvd: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK
