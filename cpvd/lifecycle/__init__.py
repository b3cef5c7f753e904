"""What happens to versions over their life: the stage ``best`` that moves by itself,
retention (GTO deregistration of versions no ``keep`` rule and no protection holds), the
trainer's local copies (``keep_local``), and garbage collection of the storage objects no
kept version references (``gc``), its ownership marker and its schedule."""
