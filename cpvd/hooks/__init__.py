"""Hooks: act on what the daemon did (a version landed, a stage moved, a job failed) by
running a program or POSTing a webhook, at least once, from a durable outbox."""
