"""The durable state in one SQLite file: the job queue, the ledger of handled checkpoints,
and the transactions that touch both (outcome)."""
