"""The Git + DVC registry: the engine (a small core plus one module per verb: versioning,
sync, stages, revert, retrieve), the git chokepoint, the tag index, DVC file formats and
version metadata. Everything read from the registry is untrusted input."""
