"""`heur tui` in a real terminal: tests/tmux_tui_check.sh at 80x24 (skipped without tmux)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("tmux_tui_check.sh")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_check_script():
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tmux check ok" in r.stdout


DASH = Path(__file__).with_name("tmux_dash_check.sh")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tmux_dash_check_on_real_runs_at_80x24_and_120x40():
    """tests/tmux_dash_check.sh: real tiny runs; the legend, seed bands, a pinned baseline,
    ticks, the system panel and a held-back toast, read off the screen at both sizes."""
    r = subprocess.run(["bash", str(DASH)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tmux dash check ok (80x24, 120x40" in r.stdout
