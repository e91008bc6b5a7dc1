"""Multi-source transfer methods."""

METHODS: list = []
