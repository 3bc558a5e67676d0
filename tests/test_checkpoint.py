"""heur.core.atomic (whole files or nothing) and heur.core.checkpoint (the format's one home)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from heur.core.atomic import replace_atomic, write_bytes_atomic, write_json_atomic
from heur.core.checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint
from heur.core.errors import ConfigError

CORE = Path(__file__).resolve().parents[1] / "core"


def test_write_json_atomic_replaces_the_file(tmp_path):
    p = tmp_path / "status.json"
    write_json_atomic(p, {"state": "queued"})
    write_json_atomic(p, {"state": "running", "path": tmp_path})  # other objects by str
    assert json.loads(p.read_text()) == {"state": "running", "path": str(tmp_path)}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["status.json"]  # no temp file left


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    p = tmp_path / "cca.json"
    write_json_atomic(p, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(p, {"a": float("nan")})
    assert json.loads(p.read_text()) == {"a": 1}

    def half_then_fail(tmp):
        tmp.write_text('{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomic(p, half_then_fail)
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cca.json"]


def test_write_bytes_atomic_and_the_temp_name_is_hidden(tmp_path):
    seen = []
    replace_atomic(tmp_path / "final.pt", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert re.fullmatch(r"\.final\.pt\.\d+\.tmp", seen[0])  # never matched by checkpoints/*.pt
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_checkpoint_round_trip(tmp_path):
    p = tmp_path / "checkpoints" / "step_3.pt"  # the folder is created
    save_checkpoint(p, {"format": FORMAT, "version": VERSION, "step": 3, "w": torch.arange(4.0)})
    ck = load_checkpoint(p)
    assert ck["step"] == 3 and torch.equal(ck["w"], torch.arange(4.0))
    assert [x.name for x in p.parent.iterdir()] == ["step_3.pt"]


def test_save_refuses_a_state_that_load_would_refuse(tmp_path):
    with pytest.raises(ValueError, match="format"):
        save_checkpoint(tmp_path / "x.pt", {"step": 1})
    assert not (tmp_path / "x.pt").exists()


def test_load_errors_name_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    torch.save({"format": FORMAT, "version": VERSION + 1}, tmp_path / "newer.pt")
    cases = {
        "missing.pt": "no such checkpoint file",
        "notes.txt": r"not a loadable checkpoint \(\w+\)",  # the class of torch.load's error
        "other.pt": re.escape(f"not a heur checkpoint (no format = {FORMAT})"),
        "newer.pt": f"checkpoint format version {VERSION + 1}: this heur reads version {VERSION} and older",
    }
    for name, msg in cases.items():
        with pytest.raises(ConfigError) as e:
            load_checkpoint(tmp_path / name)
        assert re.fullmatch(re.escape(f"{tmp_path / name}: ") + msg, str(e.value)), str(e.value)


def test_the_format_name_is_written_in_one_module():
    holders = sorted(p.name for p in CORE.glob("*.py") if '"heur-checkpoint"' in p.read_text())
    assert holders == ["checkpoint.py"]
