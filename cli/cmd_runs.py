"""`heur runs` (being written)."""


def register(app) -> None:
    pass
