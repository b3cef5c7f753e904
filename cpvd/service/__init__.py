"""Running as a service: installing systemd and launchd units (the unit files themselves
are in units/), sd_notify, and the single-instance lock and socket directory checks."""
