"""deep-based transfer methods."""

METHODS: list = []
