"""train.freeze through real (short) runs on digits: the frozen blocks are bit-identical to their
initialisation (built independently from the seed) over the frozen window, move afterwards, the
rest trains throughout, a run stopped inside the window and resumed across its end matches the
uninterrupted one bit for bit, and bad sections fail before a run starts (exit 2 from the CLI)."""

import subprocess
import sys

import pytest
import torch
from conftest import train_in_process

from heur.core import runs as R
from heur.core.config import expand
from heur.core.errors import ConfigError
from heur.core.models import build_model
from heur.core.preflight import check_experiment

BASE = {
    "name": "f",
    "device": "cpu",
    "seed": 1,
    "data": {"name": "digits", "subset": 256, "augment": True},
    "model": {"name": "cnn", "channels": [4, 8], "fc": [16, 16]},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "log_every": 1,
        "checkpoint_every": 0.5,
        "freeze": ["fc1", "fc2"],
        "freeze_epochs": 1,
    },
}
FROZEN = ("fc1.", "fc2.")


def make_run(tmp_path, overrides=()):
    exp = expand(BASE, list(overrides))
    check_experiment(exp)
    (rd,) = R.run_dirs(R.create_experiment(exp, tmp_path / "runs"))
    return rd, exp


def train(rd, resume=False, stop_at=None):
    return train_in_process(rd, resume, stop_at)


def weights(rd, name):
    return torch.load(rd / "checkpoints" / name, weights_only=True)["model"]


def test_frozen_blocks_stay_bit_identical_then_train(tmp_path):
    rd, exp = make_run(tmp_path)
    _, state = train(rd)
    assert state == "completed"
    cfg = next(iter(exp.runs.values()))
    init = build_model(cfg, (1, 8, 8), 10).state_dict()  # the seed's init, built here
    spe = 8  # 256 / 32: the window is steps 0..7, checkpoints every 4 steps
    for step in (4, 8):
        w = weights(rd, f"step_{step}.pt")
        for k in w:
            if k.startswith(FROZEN):
                assert torch.equal(w[k], init[k]), (step, k)  # no gradient, no decay, no momentum
            else:
                assert not torch.equal(w[k], init[k]), (step, k)  # the rest trains from step 1
    after = weights(rd, "step_12.pt")
    for k in after:
        if k.startswith(FROZEN):
            assert not torch.equal(after[k], init[k]), k  # released at step 8 = freeze_epochs * spe
    final = weights(rd, "final.pt")
    assert all(not torch.equal(final[k], after[k]) for k in final)
    assert spe * 3 == torch.load(rd / "checkpoints" / "final.pt", weights_only=True)["step"]


def test_freeze_steps_and_resume_across_the_boundary_is_exact(tmp_path):
    over = ["train.freeze_epochs=0", "train.freeze_steps=6"]
    with pytest.raises(ConfigError) as e:  # both durations
        check_experiment(expand(BASE, over))
    assert e.value.key == "train.freeze_epochs"
    over = ['train.freeze=["fc2", "out"]', "train.freeze_steps=6", "train.checkpoint_every=0"]
    ref = {k: v for k, v in BASE.items()}
    ref["train"] = {k: v for k, v in BASE["train"].items() if k != "freeze_epochs"}
    exp = expand(ref, over)
    check_experiment(exp)
    (rd_ref,) = R.run_dirs(R.create_experiment(exp, tmp_path / "ref"))
    train(rd_ref)
    (rd,) = R.run_dirs(R.create_experiment(exp, tmp_path / "resumed"))
    _, state = train(rd, stop_at=3)  # stopped inside the window, resumed across its end
    assert state == "stopped"
    cfg = next(iter(exp.runs.values()))
    init = build_model(cfg, (1, 8, 8), 10).state_dict()
    mid = weights(rd, "step_3.pt")
    assert all(torch.equal(mid[k], init[k]) for k in mid if k.startswith(("fc2.", "out.")))
    _, state = train(rd, resume=True)
    assert state == "completed"
    a, b = weights(rd, "final.pt"), weights(rd_ref, "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["out.weight"], init["out.weight"])


@pytest.mark.parametrize(
    "over,key,text",
    [
        (['train.freeze=["fc1", "fc9"]'], "train.freeze", "'fc9'"),
        (['train.freeze=["fc1"]', "train.freeze_epochs=-1"], "train.freeze_epochs", ">= 0"),
    ],
)
def test_preflight_names_the_key(over, key, text):
    with pytest.raises(ConfigError) as e:
        check_experiment(expand(BASE, over))
    assert e.value.key == key and text in str(e.value)
    if key == "train.freeze":
        assert "conv1, conv2, fc1, fc2, out" in str(e.value)
    raw = {k: v for k, v in BASE.items()}
    raw["train"] = {k: v for k, v in BASE["train"].items() if k != "freeze_epochs"}
    with pytest.raises(ConfigError) as e:  # no duration
        check_experiment(expand(raw, []))
    assert e.value.key == "train.freeze_epochs"


def test_cli_refuses_an_unknown_block_with_exit_2(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text(
        'name = "p"\n[data]\nname = "digits"\n[model]\nname = "cnn"\nfc = [8]\n'
        '[train]\nepochs = 1\nfreeze = ["fc2"]\nfreeze_steps = 3\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "heur.cli.main", "run", str(preset), "--dry-run", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "train.freeze" in out.stderr and "'fc2'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
