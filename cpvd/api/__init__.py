"""The daemon's HTTP API on its Unix socket: server (socket, peer check, guard), handlers,
queries and operations behind them, the event bus and the Prometheus metrics."""
