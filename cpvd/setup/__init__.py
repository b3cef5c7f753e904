"""Before the daemon runs: `cpvd check` (prove the config can work) and `cpvd init` (the
setup wizard)."""
