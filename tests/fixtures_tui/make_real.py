"""Train real tiny runs (in this process, digits, a few steps each) for tests/tmux_dash_check.sh:

python tests/fixtures_tui/make_real.py DIR && heur tui --runs-dir DIR/runs

"base" (one run, the baseline to pin); "edge" (full-batch GD with the sharpness probe: "calm" at lr
0.1 and "wild" at lr 40, which diverges); a second later "many" (3 lr x 4 seeds = 12 runs).
"""

import sys
import time
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import TINY, train_in_process  # noqa: E402

from heur.core import runs as R  # noqa: E402
from heur.core.config import expand  # noqa: E402


def raw(name: str, **over) -> dict:
    d = tomllib.loads(TINY)
    d["name"] = name
    d["data"]["subset"] = 64
    d["model"]["width"] = 8
    d["train"].update(epochs=2, batch_size=32, log_every=1)
    d.update(over)
    return d


if __name__ == "__main__":
    runs = Path(sys.argv[1]) / "runs"
    base = R.create_experiment(expand(raw("base", seed=7), []), runs)
    edge = raw("edge", data={"name": "digits", "subset": 256, "augment": False})
    edge["model"].update(width=32, depth=2)
    edge["optim"] = {"name": "sgd", "lr": 0.1}
    edge["train"] = {"full_batch": True, "epochs": 30, "log_every": 1, "eval_every": 10}
    edge["probes"] = {"sharpness": {"batch": 256, "every": 10, "max_iter": 10, "tol": 1e-2}}
    edge["variant"] = [{"name": "calm"}, {"name": "wild", "set": {"optim.lr": 40.0}}]
    edge = R.create_experiment(expand(edge, []), runs)
    time.sleep(1.1)
    many = R.create_experiment(expand(raw("many", grid={"optim.lr": [0.02, 0.1, 0.3], "seed": [0, 1, 2, 3]}), []), runs)
    for rd in R.run_dirs(base) + R.run_dirs(edge) + R.run_dirs(many):
        _, state = train_in_process(rd)
        assert state == ("diverged" if rd.name == "wild" else "completed"), (rd, state)
    print(runs)
