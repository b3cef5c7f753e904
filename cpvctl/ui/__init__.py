"""``cpvctl ui``: the local page, a loopback HTTP server that serves static files and forwards
an allow-list of API calls to the daemon's Unix socket. Standard library only."""
