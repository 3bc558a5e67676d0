"""core.safe_pickle: plain data and numpy arrays load; anything that names code is refused unrun."""

import pickle

import numpy as np
import pytest

from heur.core.safe_pickle import UnsafePickle, load_plain, md5_of


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_values_and_number_arrays_round_trip(tmp_path, protocol):
    d = {
        b"data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "f": np.linspace(0, 1, 5).astype(np.float32),
        b"labels": [1, 2, 3],
        b"batch_label": b"training batch 1 of 5",
        "names": ["a", "b"],
        "t": (1, 2.5, None, True),
    }
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps(d, protocol=protocol))
    got = load_plain(p)
    assert got.keys() == d.keys()
    assert np.array_equal(got[b"data"], d[b"data"]) and got[b"data"].dtype == np.uint8
    assert np.array_equal(got["f"], d["f"]) and got["f"].dtype == np.float32
    assert got[b"labels"] == [1, 2, 3] and got[b"batch_label"] == d[b"batch_label"] and got["t"] == d["t"]


@pytest.mark.parametrize(
    "payload",
    [
        lambda m: _Call(__import__("os").system, f"touch {m}"),
        lambda m: _Call(exec, f"open({str(m)!r}, 'w')"),
        lambda m: _Call(__import__("subprocess").call, ["touch", str(m)]),
        lambda m: {"data": [_Call(eval, f"open({str(m)!r}, 'w')")]},
    ],
)
def test_globals_outside_the_numpy_set_are_refused_and_never_called(tmp_path, payload):
    marker = tmp_path / "marker"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(payload(marker), protocol=2))
    with pytest.raises(UnsafePickle, match="which a data file does not need"):
        load_plain(p)
    assert not marker.exists()


def test_object_arrays_are_refused(tmp_path):
    p = tmp_path / "o.pkl"
    p.write_bytes(pickle.dumps(np.array([1, "a"], dtype=object)))
    with pytest.raises(UnsafePickle, match="dtype"):
        load_plain(p)


def test_md5_of_matches_a_known_digest(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert md5_of(p) == "900150983cd24fb0d6963f7d28e17f72"  # RFC 1321's test suite


def test_the_numpy_1_module_names_of_the_real_cifar_files_resolve(tmp_path):
    """The CIFAR archives were pickled by Python 2 and numpy 1: their GLOBAL opcodes name
    numpy.core.multiarray._reconstruct (numpy 2 moved it to numpy._core)."""
    a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = pickle.dumps({"data": a, "labels": [3, 4]}, protocol=2)
    legacy = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert legacy != raw and b"numpy.core.multiarray\n_reconstruct" in legacy
    p = tmp_path / "data_batch_1"
    p.write_bytes(legacy)
    got = load_plain(p)
    assert np.array_equal(got["data"], a) and got["labels"] == [3, 4]
