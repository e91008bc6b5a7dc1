"""model-based transfer methods."""

METHODS: list = []
