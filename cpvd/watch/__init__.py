"""Seeing checkpoints: the watcher (inotify or polling, plus rescans), the pure settle rules
that decide when a checkpoint is complete (settle), the per-format validation (formats)
and the sidecar metrics read beside a checkpoint (sidecar)."""
