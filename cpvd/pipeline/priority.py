"""Run cpvd's working threads at a lower CPU and I/O priority than the trainer beside it.

A checkpoint is versioned while the next training step runs on the same cores: the
daemon's hashing, copying and uploading must yield to the trainer, not compete with it.
Under systemd the unit sets ``Nice=``, ``IOSchedulingClass=`` and weights for the whole
process; ``cpvd run`` in a terminal has none of that, so the threads that do the heavy
work (the thread pools of :mod:`cpvd.pipeline.threads`) lower themselves when they start.
The event loop (the API, the watcher relay) keeps its priority, so ``cpvctl`` stays quick.

On Linux, nice and the I/O priority are per thread, and a thread (or a ``git`` child) that
one of these threads starts inherits its values: boto3's transfer threads, the hashing
thread of a snapshot and the Git processes of the registry thread all run lowered too.
Elsewhere ``setpriority`` would change the whole process, so nothing is done there (the
launchd plist's ``ProcessType=Background`` covers macOS).

Only ever lowered: a thread already nicer than asked (``Nice=15`` in a unit) keeps its
value, and raising a priority would need privileges the daemon should not have.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
import threading

log = logging.getLogger(__name__)

#: ``[daemon] nice`` bounds: 0 leaves the threads alone; 19 is the lowest Linux priority
NICE_MIN, NICE_MAX = 0, 19
DEFAULT_NICE = 10

#: best-effort class, lowest level: the idle class could starve uploads for as long as a
#: trainer reads its data set, and the durability lag with them
IOPRIO_CLASS_BE = 2
IOPRIO_LOWEST_LEVEL = 7
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1
#: (ioprio_set, ioprio_get) syscall numbers; glibc has no wrapper
_IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread at least ``nice`` (and best-effort I/O, lowest level).

    Meant as a ``ThreadPoolExecutor`` initializer; never raises (a thread that cannot be
    lowered still works, at normal priority).
    """
    if nice <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.warning("cannot lower the priority of thread %d: %s", tid, exc)
    set_io_priority(tid, IOPRIO_CLASS_BE, IOPRIO_LOWEST_LEVEL)


def io_priority(tid: int) -> tuple[int, int] | None:
    """``(class, level)`` of thread ``tid``, None where it cannot be read."""
    calls = _IOPRIO_SYSCALLS.get(platform.machine())
    if calls is None:
        return None
    value = _syscall(calls[1], _IOPRIO_WHO_PROCESS, tid)
    if value is None or value < 0:
        return None
    return value >> _IOPRIO_CLASS_SHIFT, value & ((1 << _IOPRIO_CLASS_SHIFT) - 1)


def set_io_priority(tid: int, io_class: int, level: int) -> bool:
    """Set thread ``tid``'s I/O class and level, unless it is already as low (a unit's
    ``IOSchedulingClass=idle`` stays idle). False where the system has no such call."""
    calls = _IOPRIO_SYSCALLS.get(platform.machine())
    if calls is None:
        return False
    current = io_priority(tid)
    if current is not None and _io_rank(current) >= _io_rank((io_class, level)):
        return True
    value = (io_class << _IOPRIO_CLASS_SHIFT) | level
    return _syscall(calls[0], _IOPRIO_WHO_PROCESS, tid, value) == 0


def _io_rank(prio: tuple[int, int]) -> tuple[int, int]:
    """Higher is lower priority. Class 0 ("none") means best-effort at a level derived
    from nice; it counts as best-effort level 4, the kernel's default."""
    io_class, level = prio
    return (IOPRIO_CLASS_BE, 4) if io_class == 0 else (io_class, level)


def _syscall(number: int, *args: int) -> int | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(number, *(ctypes.c_int(a) for a in args)))
    except (OSError, AttributeError):
        return None
