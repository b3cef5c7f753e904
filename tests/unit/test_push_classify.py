"""Which push failures are races with another machine (fetch, replay, retry) and which are
the remote refusing (a hook, a protected branch): replaying those only churns history."""

from __future__ import annotations

from cpvd.registry.repo import push_failure_kind, remote_lock_of

HOOK = """To /srv/registry.git
!\trefs/heads/main:refs/heads/main\t[remote rejected] (pre-receive hook declined)
!\trefs/tags/a@v1.1.0:refs/tags/a@v1.1.0\t[remote rejected] (pre-receive hook declined)
Done
remote: pushes are closed
error: atomic push failed for ref refs/heads/main. status: 5
error: failed to push some refs to '/srv/registry.git'
"""

RACE = """To /srv/registry.git
!\trefs/heads/main:refs/heads/main\t[rejected] (fetch first)
!\trefs/tags/a@v1.1.0:refs/tags/a@v1.1.0\t[rejected] (atomic push failed)
Done
"""

TAG_TAKEN = """To /srv/registry.git
=\trefs/heads/main:refs/heads/main\t[up to date]
!\trefs/tags/a@v1.1.0:refs/tags/a@v1.1.0\t[rejected] (already exists)
Done
"""

SERVER_RACE = """To /srv/registry.git
!\trefs/heads/main:refs/heads/main\t[remote rejected] (cannot lock ref 'refs/heads/main')
Done
"""

# two pushes landing at once: the server's ref transaction loses the lock race
SERVER_ATOMIC = """To /srv/registry.git
!\trefs/heads/main:refs/heads/main\t[remote rejected] (atomic transaction failed)
Done
remote: error: cannot lock ref 'refs/heads/main': reference already exists
"""

# a push killed with -9 on a local-path remote leaves the remote's lock behind: every later
# push fails until someone removes it, so replaying can never help
STALE_LOCK = (
    "To /srv/registry.git\n"
    "!\trefs/heads/main:refs/heads/main\t[remote rejected] (atomic transaction failed)\n"
    "Done\n"
    "remote: error: cannot lock ref 'refs/heads/main': Unable to create "
    "'/srv/registry.git/./refs/heads/main.lock': File exists.\n"
    "remote:\n"
    "remote: Another git process seems to be running in this repository, e.g.\n"
)

UNREACHABLE = "fatal: '/srv/gone.git' does not appear to be a git repository\n"


def test_races_are_replayed() -> None:
    assert push_failure_kind(RACE) == "race"
    assert push_failure_kind(TAG_TAKEN) == "race"
    assert push_failure_kind(SERVER_RACE) == "race"
    assert push_failure_kind(SERVER_ATOMIC) == "race"
    assert push_failure_kind("! [rejected] main -> main (non-fast-forward)") == "race"


def test_a_hook_or_policy_refusal_is_not_a_race() -> None:
    assert push_failure_kind(HOOK) == "refused"
    protected = (
        "!\trefs/heads/main:refs/heads/main\t[remote rejected] (protected branch hook declined)"
    )
    assert push_failure_kind(protected) == "refused"


def test_a_held_lock_on_the_remote_is_not_replayed() -> None:
    assert push_failure_kind(STALE_LOCK) == "locked"
    assert remote_lock_of(STALE_LOCK) == "/srv/registry.git/refs/heads/main.lock"


def test_no_verdict_is_an_error() -> None:
    assert push_failure_kind(UNREACHABLE) == "error"
