"""Version lifecycle: the stage ``best`` that moves by itself, and retention (GTO
deregistration of versions no ``keep`` rule and no protection holds)."""
