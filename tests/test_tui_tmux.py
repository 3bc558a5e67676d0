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
