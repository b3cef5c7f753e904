"""What ``cpvd check`` says about each hook before the daemon runs: a program that is not
there or not executable, a webhook whose secret variable is unset. Nothing is sent (a test
POST could start a deployment); ``cpvctl hooks test NAME`` does that on request."""

from __future__ import annotations

import os
import shutil

from cpvd.hooks.model import HookConfig


def hook_ready(index: int, hook: HookConfig) -> tuple[bool, str]:
    """(ok, detail) for ``[[hook]] #index``."""
    if hook.url is not None:
        return _webhook(index, hook)
    program = hook.exec[0]
    found = program if os.path.isabs(program) else shutil.which(program)
    if found is None or not os.path.exists(found):
        where = "" if os.path.isabs(program) else " on PATH"
        return False, f"program {program} not found{where}; fix [[hook]] #{index} exec"
    if not os.path.isfile(found) or not os.access(found, os.X_OK):
        return False, f"{found} is not executable: chmod +x it, or fix [[hook]] #{index} exec"
    return True, f"runs {found} on {', '.join(hook.on)}"


def _webhook(index: int, hook: HookConfig) -> tuple[bool, str]:
    target = f"posts to {hook.target()} on {', '.join(hook.on)}"
    if hook.secret_env is not None and not os.environ.get(hook.secret_env):
        return False, (
            f"{hook.secret_env} (secret_env of [[hook]] #{index}) is not set here; cpvd needs "
            "it in its own environment (the service unit's Environment=) to sign deliveries"
        )
    return True, target + (f", signed with ${hook.secret_env}" if hook.secret_env else "")
