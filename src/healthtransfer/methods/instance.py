"""instance-based transfer methods."""

METHODS: list = []
