import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
description = "a tiny run for tests"
seed = 0
device = "cpu"
[data]
name = "digits"
subset = 256
[model]
name = "mlp"
width = 32
depth = 1
[optim]
name = "sgd"
lr = 0.1
momentum = 0.9
[train]
epochs = 3
batch_size = 32
log_every = 2
"""


@pytest.fixture
def tiny_preset(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


def heur(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (same interpreter, so the same install)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "heur.cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=e
    )


def train_in_process(rd: Path, resume: bool = False, stop_at: int | None = None):
    """Train run directory ``rd`` in this process, as ``python -m heur.core.train`` would; with
    ``stop_at``, ask it to stop after that step (as SIGTERM does). Returns (the Run, its state)."""
    from heur.core.probes import Probe
    from heur.core.train import Run

    r = Run(rd, resume=resume)
    r.setup()
    if stop_at is not None:

        class Stop(Probe):
            name = "stop"

            def after_step(self, ctx):
                if ctx.step == stop_at:
                    r.stop_requested = True

        r.probes.append(Stop(None))
    state, reason, last = r.train()
    r.finish(state, reason, last)
    return r, state
