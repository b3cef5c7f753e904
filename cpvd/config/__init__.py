"""What cpvd is told: the config model (model), reading and writing cpvd.toml with errors
that name the key and the file (load), and the platform default paths (paths)."""
