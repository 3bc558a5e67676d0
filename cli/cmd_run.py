"""`heur run` (being written)."""


def register(app) -> None:
    pass
