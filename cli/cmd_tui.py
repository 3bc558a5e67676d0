"""`heur tui` (not written yet)."""


def register(app) -> None:
    pass
