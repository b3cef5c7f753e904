"""Fault-injection tests, cases 7-12 of issue 6, against the real daemon process.

test_rotation (7), test_disk_full (8, root only: a small tmpfs as the state dir),
test_corrupt_state (9), test_event_flood (10), test_api_fuzz (11), test_verify (12).

The default run is bounded (about 3 minutes for the package). Full sizes:

    PYTHONPATH=. .venv/bin/python -m pytest -s -m soak tests/e2e/faults2

runs the 20,000-file floods. ``CPV_FLOOD_FILES`` / ``CPV_FLOOD_DETECT_FILES`` change the
default flood sizes (200 versioned, 2,000 detected and queued with the worker paused).
"""
