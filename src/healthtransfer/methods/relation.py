"""relation-based transfer methods."""

METHODS: list = []
