"""Run the TUI over fixture run dirs (no engine needed): python tests/fixtures_tui/demo.py DIR"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_tui import FakeSource, make_presets, make_runs  # noqa: E402

from heur.tui.app import HeurApp  # noqa: E402

if __name__ == "__main__":
    root = Path(sys.argv[1])
    if not (root / "runs").exists():
        make_runs(root / "runs")
        make_presets(root / "presets")
    HeurApp(root / "runs", root / "presets", source=FakeSource(root / "runs")).run()
