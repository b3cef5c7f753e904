"""Runs an exec hook: the program and its arguments (placeholders filled), no shell, the
event JSON on stdin, ``CPV_EVENT_ID`` and ``CPV_EVENT`` in its environment. It runs in its
own session so a timeout kills the whole group it started (an evaluation spawning workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from cpvd.hooks.attempt import Attempt, tail
from cpvd.hooks.event import HookEvent
from cpvd.hooks.model import HookConfig, fill_placeholders
from cpvd.redact import mask_url

OUTPUT_TAIL = 4096


def hook_env(event: HookEvent) -> dict[str, str]:
    return {**os.environ, "CPV_EVENT_ID": event.id, "CPV_EVENT": event.type}


async def run_exec(hook: HookConfig, event: HookEvent) -> Attempt:
    started = time.monotonic()
    argv = fill_placeholders(hook.exec, event.data)

    def done(ok: bool, detail: str) -> Attempt:
        return Attempt(ok, detail, time.monotonic() - started)

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=hook_env(event),
            start_new_session=True,
        )
    except FileNotFoundError:
        return done(False, f"program not found: {argv[0]} (give its absolute path in exec)")
    except PermissionError:
        return done(False, f"program not executable: {argv[0]} (chmod +x it)")
    except OSError as exc:
        return done(False, f"cannot run {argv[0]}: {exc.strerror or exc}")
    try:
        out = await asyncio.wait_for(_talk(proc, event.body()), hook.timeout)
    except TimeoutError:
        await _kill(proc)
        return done(False, f"{argv[0]} ran over its timeout of {hook.timeout:g}s; killed")
    except asyncio.CancelledError:  # cpvd stops: no program outlives it (run again next start)
        await asyncio.shield(_kill(proc))
        raise
    if proc.returncode == 0:
        return done(True, "exit 0")
    detail = f"{argv[0]} exited with status {proc.returncode}"
    text = mask_url(tail(out))
    return done(False, f"{detail}: {text}" if text else detail)


async def _talk(proc: asyncio.subprocess.Process, body: bytes) -> bytes:
    """Write the event, then read the output keeping only its tail (an evaluation may print
    megabytes; memory stays bounded); returns it once the program has exited."""
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it need not read it
        proc.stdin.write(body)
        await proc.stdin.drain()
    proc.stdin.close()
    kept = b""
    while chunk := await proc.stdout.read(65536):
        kept = (kept + chunk)[-OUTPUT_TAIL:]
    await proc.wait()
    return kept


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
