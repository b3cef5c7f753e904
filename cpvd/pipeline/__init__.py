"""A complete checkpoint on its way to a pushed version: intake -> snapshot (copier,
snapshot store, writeback; speculative snapshots during the quiet period; per-file early
uploads) -> durable queue -> worker (next-job upload overlaps the commit) -> pusher.
Shared daemon state (health, pause, wake-ups) and the thread pools live here too."""
