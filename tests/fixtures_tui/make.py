"""Write fixture runs and presets for trying the TUI by hand or from tests/tmux_tui_check.sh:

python tests/fixtures_tui/make.py DIR && heur tui --runs-dir DIR/runs --presets-dir DIR/presets
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures_tui import make_presets, make_runs  # noqa: E402

if __name__ == "__main__":
    root = Path(sys.argv[1])
    make_runs(root / "runs")
    make_presets(root / "presets")
    print(root)
