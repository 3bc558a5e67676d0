"""`heur compare` (not written yet)."""


def register(app) -> None:
    pass
