"""feature-based transfer methods."""

METHODS: list = []
