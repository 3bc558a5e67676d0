"""`heur schedule` (not written yet)."""


def register(app) -> None:
    pass
