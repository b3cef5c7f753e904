"""Human output for cpvctl: pure functions from the daemon's JSON to text.

Pure so they are tested directly, and tolerant: the daemon may omit optional keys or add new
ones, and a missing key shows as ``-`` rather than a traceback. ``--json`` bypasses all of this
and prints the daemon's JSON as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cpvctl.render_backlog import backlog_lines
from cpvctl.render_lifecycle import render_lifecycle, version_label
from cpvctl.render_registries import registry_lines

DASH = "-"


def human_size(n: object) -> str:
    """Binary units, three significant digits: ``1.5 KiB``, ``12.0 MiB``, ``512 B``."""
    if not isinstance(n, int | float) or isinstance(n, bool) or n < 0:
        return DASH
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return DASH  # pragma: no cover - loop always returns


def human_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def human_time(text: object) -> str:
    """An ISO-8601 timestamp as local ``YYYY-MM-DD HH:MM``; anything else unchanged."""
    if not isinstance(text, str) or not text:
        return DASH
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%Y-%m-%d %H:%M")


def short_md5(md5: object) -> str:
    return md5[:8] if isinstance(md5, str) and md5 else DASH


def _scalar(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return DASH
    return str(value)


def compact_metrics(metrics: object) -> str:
    """``acc=0.9312 loss=0.1204`` (floats to 4 significant digits)."""
    if not isinstance(metrics, Mapping) or not metrics:
        return DASH
    return " ".join(f"{k}={_scalar(v)}" for k, v in metrics.items())


def _stages(value: object) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{k}" for k in value) or DASH
    if isinstance(value, list | tuple):
        return ",".join(str(s) for s in value) or DASH
    return DASH


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [[_scalar(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def render_versions(versions: Sequence[Mapping[str, Any]]) -> str:
    if not versions:
        return "no versions yet"
    rows = [
        (
            version_label(v),
            human_time(v.get("created_at")),
            human_size(v.get("size")),
            short_md5(v.get("md5")),
            compact_metrics(v.get("metrics")),
            _stages(v.get("stages")),
        )
        for v in versions
    ]
    return table(("VERSION", "CREATED", "SIZE", "MD5", "METRICS", "STAGES"), rows)


def render_artifacts(artifacts: Sequence[Mapping[str, Any]]) -> str:
    if not artifacts:
        return "no artifacts yet"
    rows = [
        (a.get("name", DASH), a.get("kind", DASH), a.get("latest") or DASH, a.get("count", DASH))
        for a in artifacts
    ]
    return table(("ARTIFACT", "KIND", "LATEST", "VERSIONS"), rows)


def _pairs(pairs: Sequence[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in pairs)


def render_show(v: Mapping[str, Any]) -> str:
    lineage = v.get("lineage")
    pairs: list[tuple[str, object]] = [
        ("artifact", v.get("artifact", DASH)),
        ("version", version_label(v)),
        ("tag", v.get("tag", DASH)),
        ("created", human_time(v.get("created_at"))),
        ("kind", v.get("kind", DASH)),
        ("name", v.get("name", DASH) + ("/" if v.get("is_dir") else "")),
        ("size", human_size(v.get("size"))),
        ("files", v.get("files", v.get("nfiles", DASH))),
        ("md5", v.get("md5", DASH)),
        ("source", v.get("source", DASH)),
        ("relpath", v.get("relpath") or DASH),
        ("host", v.get("host", DASH)),
        ("metrics", compact_metrics(v.get("metrics"))),
        ("stages", _stages(v.get("stages"))),
        (
            "lineage",
            " ".join(f"{k}@{val}" for k, val in lineage.items())
            if isinstance(lineage, Mapping) and lineage
            else DASH,
        ),
    ]
    return _pairs(pairs)


def _job_id(job: Mapping[str, Any]) -> str:
    return str(job.get("job_id") or job.get("id") or DASH)


def _job_path(job: Mapping[str, Any]) -> str:
    return str(job.get("path") or job.get("source") or DASH)


def _job_reason(job: Mapping[str, Any]) -> str:
    result = job.get("result")
    reason = result.get("reason") if isinstance(result, Mapping) else None
    return str(job.get("error") or reason or "")


def render_job(job: Mapping[str, Any]) -> str:
    """One line: ``job 1a2b3c4d  done  vision/resnet50@v1.3.0  /data/x.pt``."""
    what = job.get("artifact", DASH)
    if job.get("version"):
        what = f"{what}@{job['version']}"
    line = f"job {_job_id(job)}  {job.get('state', '?')}  {what}"
    if _job_path(job) != DASH:
        line += f"  {_job_path(job)}"
    if _job_reason(job):
        line += f"  ({_job_reason(job)})"
    return line


def _hooks_lines(hooks: object) -> list[str]:
    """``hooks: 2, pending 3`` and one line per failing hook (see ``cpvctl hooks``)."""
    if not isinstance(hooks, Mapping) or not hooks.get("count"):
        return []
    lines = [f"hooks: {hooks.get('count')}, pending {hooks.get('pending', 0)}"]
    for f in hooks.get("failing") or []:
        lines.append(
            f"  hook {f.get('name', DASH)} FAILING ({f.get('failures', '?')} attempts): "
            f"{f.get('error') or DASH}"
        )
    return lines


def _storage_and_registry(storage: Mapping[str, Any], registry: Mapping[str, Any]) -> list[str]:
    reachable = storage.get("reachable")
    reach = "not checked yet" if reachable is None else "reachable" if reachable else "UNREACHABLE"
    line = f"storage: {storage.get('url', DASH)}  {reach}"
    if storage.get("error"):
        line += f"  ({storage['error']})"
    lines = [line]
    line = f"registry: {registry.get('path', DASH)}"
    if registry.get("remote"):
        line += f" -> {registry['remote']}"
    if registry.get("remote") and registry.get("reachable") is False:
        line += "  remote UNREACHABLE"
    line += f"  unpushed {registry.get('unpushed', 0)}"
    if registry.get("error"):
        line += f"  ({registry['error']})"
    return [*lines, line]


def render_status(st: Mapping[str, Any]) -> str:
    out: list[str] = []
    daemon = st.get("daemon") or {}
    queue = st.get("queue") or {}
    storage = st.get("storage") or {}
    registry = st.get("registry") or {}
    cpv = daemon.get("cpv_version") or daemon.get("version") or "?"
    head = f"cpvd {cpv} (API {daemon.get('api_version', '?')})"
    if daemon.get("pid"):
        head += f", pid {daemon['pid']}"
    if isinstance(daemon.get("uptime"), int | float):
        head += f", up {human_duration(daemon['uptime'])}"
    out.append(head)
    paused = st.get("paused", daemon.get("paused"))
    if paused == "all":
        out.append("PAUSED: all watches")
    elif isinstance(paused, list) and paused:
        out.append(f"paused: {', '.join(str(p) for p in paused)}")
    out.append(
        "queue: "
        + "  ".join(f"{k} {queue.get(k, 0)}" for k in ("queued", "running", "failed"))
        + (f"  done {queue['done']}" if "done" in queue else "")
    )
    out.extend(registry_lines(st) or _storage_and_registry(storage, registry))
    out.extend(_hooks_lines(st.get("hooks")))
    out.extend(backlog_lines(st, human_duration))

    lifecycle = render_lifecycle(st.get("artifacts") or [], human_size)
    if lifecycle:
        out += ["", *lifecycle]
    watches = st.get("watches") or []
    out.append("")
    if watches:
        out.append(
            table(
                ("WATCH", "ARTIFACT", "KIND", "MODE", "STATE"),
                [
                    (
                        w.get("path", DASH),
                        w.get("artifact", DASH),
                        w.get("kind", DASH),
                        w.get("mode") or ("poll" if w.get("poll") else "inotify"),
                        ("paused" if w.get("paused") else "watching")
                        + (" (directory missing)" if w.get("exists") is False else "")
                        + (f" ({w['error']})" if w.get("error") else ""),
                    )
                    for w in watches
                ],
            )
        )
    else:
        out.append("no watches configured")

    jobs = st.get("jobs") or []
    if jobs:
        out.append("")
        out.append(
            table(
                ("JOB", "STATE", "ARTIFACT", "VERSION", "PATH", "ERROR"),
                [
                    (
                        _job_id(j),
                        j.get("state", DASH),
                        j.get("artifact", DASH),
                        j.get("version") or DASH,
                        _job_path(j),
                        _job_reason(j),
                    )
                    for j in jobs
                ],
            )
        )
    settling = st.get("settling") or []
    if settling:
        out.append("")
        out.append(
            table(
                ("SETTLING", "ARTIFACT", "QUIET LEFT"),
                [
                    (
                        w.get("path", DASH),
                        w.get("artifact") or DASH,
                        _quiet_left(w.get("quiet_left")),
                    )
                    for w in settling
                ],
            )
        )
    waiting = st.get("waiting") or []
    if waiting:
        out.append("")
        out.append(
            table(
                ("WAITING", "ARTIFACT", "SINCE", "REASON"),
                [
                    (
                        w.get("path", DASH),
                        w.get("artifact") or DASH,
                        human_time(w.get("since")),
                        w.get("reason", DASH),
                    )
                    for w in waiting
                ],
            )
        )
    return "\n".join(out)


def render_ignored(st: Mapping[str, Any]) -> str:
    """``status --ignored``: per watch, what is in no checkpoint unit and why."""
    rows = [
        (
            f"{w.get('path', DASH)}/{f.get('relpath', DASH)}",
            w.get("artifact") or DASH,
            f.get("reason") or DASH,
        )
        for w in st.get("ignored") or []
        for f in w.get("files") or []
    ]
    if not rows:
        return "\n\nno ignored files: every file in the watches is part of a checkpoint"
    more = [w.get("path", DASH) for w in st.get("ignored") or [] if w.get("truncated")]
    tail = "".join(f"\n(more not listed under {p})" for p in more)
    return "\n\n" + table(("IGNORED", "ARTIFACT", "REASON"), rows) + tail


def _quiet_left(seconds: object) -> str:
    """``1.4s`` of quiet still needed; ``checking`` once the quiet period is over."""
    if not isinstance(seconds, int | float):
        return DASH
    return f"{seconds:.1f}s" if seconds > 0 else "checking"


def render_event(event: str, data: Mapping[str, Any]) -> str:
    """``versioned  artifact=vision/resnet50 version=v1.3.0 job_id=...`` (one line)."""
    fields = " ".join(
        f"{k}={_scalar(v) if not isinstance(v, dict | list) else v}" for k, v in data.items()
    )
    return f"{event}  {fields}".rstrip()


def render_verify(result: Mapping[str, Any]) -> str:
    missing = result.get("missing") or []
    corrupt = result.get("corrupt") or []
    lines = [f"checked {result.get('checked', 0)}: {len(missing)} missing, {len(corrupt)} corrupt"]
    for label, items in (("missing", missing), ("corrupt", corrupt)):
        for item in items:
            if isinstance(item, Mapping):
                ref = item.get("tag") or f"{item.get('artifact', '?')}@{item.get('version', '?')}"
                if item.get("relpath"):
                    ref += f":{item['relpath']}"
                lines.append(f"  {label}: {ref}")
            else:
                lines.append(f"  {label}: {item}")
    return "\n".join(lines)


def render_reverted(result: Mapping[str, Any]) -> str:
    lines = []
    for r in result.get("reverted") or []:
        line = f"reverted {r.get('artifact')} to {r.get('version')} at {r.get('path', DASH)}"
        if r.get("backup"):
            line += f" (previous file kept at {r['backup']})"
        lines.append(line)
    return "\n".join(lines) or "nothing reverted"


def render_promoted(result: Mapping[str, Any]) -> str:
    lines = [
        f"promoted {p.get('artifact')}@{p.get('version')} to {p.get('stage')}"
        f" ({p.get('tag', DASH)})"
        for p in result.get("promoted") or []
    ]
    return "\n".join(lines) or "nothing promoted"


def render_paused(result: Mapping[str, Any]) -> str:
    paused = result.get("paused")
    if paused == "all":
        return "paused: all watches"
    if isinstance(paused, list) and paused:
        return "paused: " + ", ".join(str(p) for p in paused)
    return "paused: none (all watches active)"
