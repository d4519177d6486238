"""Entry points: the ``verifier`` command."""
