"""What happens to versions over their life: which are kept, and garbage collection of the
storage objects no kept version references (``gc``), its ownership marker and its schedule."""
