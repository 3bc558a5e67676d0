import json
import math

from heur.core.events import EventReader, EventWriter, apply_resumes, read_events


def test_writer_emits_one_json_object_per_line_and_nulls_non_finite(tmp_path):
    p = tmp_path / "events.jsonl"
    with EventWriter(p) as w:
        w.emit("sharpness", 1, 0.1, lambda_max=float("nan"), lr=0.1, top_k=[1.0, float("inf")])
    lines = p.read_text().splitlines()
    assert len(lines) == 1
    ev = json.loads(lines[0])
    assert ev["kind"] == "sharpness" and ev["lambda_max"] is None and ev["lr"] == 0.1
    assert ev["top_k"] == [1.0, None]
    assert {"kind", "step", "epoch", "time"} <= set(ev)


def test_reader_tolerates_torn_and_malformed_lines_and_resumes(tmp_path):
    p = tmp_path / "events.jsonl"
    r = EventReader(p)
    assert r.read() == []  # missing file
    p.write_bytes(b'{"kind":"start","step":0}\nnot json\n[1,2]\n{"kind":"train","st')
    evs = r.read()
    assert [e["kind"] for e in evs] == ["start"] and r.skipped == 2
    with open(p, "ab") as f:
        f.write(b'ep":3}\n')
    evs = r.read()
    assert evs == [{"kind": "train", "step": 3}]
    assert r.read() == [] and not r.changed()


def test_reader_starts_over_when_file_replaced(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_text('{"kind":"a","step":0}\n{"kind":"b","step":1}\n')
    r = EventReader(p)
    assert len(r.read()) == 2
    p.write_text('{"kind":"c","step":0}\n')
    assert [e["kind"] for e in r.read()] == ["c"]


def test_apply_resumes_drops_points_at_or_after_from_step():
    evs = [{"kind": "start", "step": 0}] + [{"kind": "train", "step": s} for s in (2, 4, 6, 8)]
    evs += [{"kind": "resume", "step": 4, "from_step": 4}, {"kind": "train", "step": 6}]
    out = apply_resumes(evs)
    assert [(e["kind"], e["step"]) for e in out] == [("start", 0), ("train", 2), ("resume", 4), ("train", 6)]


def test_many_events_roundtrip(tmp_path):
    p = tmp_path / "e.jsonl"
    with EventWriter(p) as w:
        for i in range(1000):
            w.emit("train", i, i / 10, loss=1.0 / (i + 1))
    evs = read_events(p)
    assert len(evs) == 1000 and math.isclose(evs[-1]["loss"], 1e-3)
