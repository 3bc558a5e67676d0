import math

import pytest
import torch

from heur.core.config import expand
from heur.core.data import DeviceBatcher, augment_batch, load_data, steps_per_epoch, total_steps, train_size
from heur.core.errors import ConfigError
from heur.core.models import build_model


def cfg_of(**sets):
    return next(iter(expand({"name": "t"}, [f"{k}={v}" for k, v in sets.items()]).runs.values()))


def test_digits_split_sizes_and_determinism():
    cfg = cfg_of(**{"data.name": '"digits"'})
    b = load_data(cfg)
    assert b.x_train.shape == (train_size(cfg.data), 1, 8, 8) and b.n_train + b.x_test.shape[0] == 1797
    b2 = load_data(cfg)
    assert torch.equal(b.y_train, b2.y_train)
    b3 = load_data(cfg_of(seed=1))
    assert not torch.equal(b.y_train, b3.y_train)


def test_steps_per_epoch_and_total():
    cfg = cfg_of(**{"data.subset": 100, "train.batch_size": 32, "train.epochs": 2.5})
    assert steps_per_epoch(cfg) == 4 and total_steps(cfg) == 10
    cfg = cfg_of(**{"data.subset": 100, "train.batch_size": 32, "train.drop_last": "true"})
    assert steps_per_epoch(cfg) == 3
    cfg = cfg_of(**{"data.subset": 100, "train.full_batch": "true"})
    assert steps_per_epoch(cfg) == 1


def test_augment_crop_and_flip_match_a_per_sample_oracle():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, 2, True, g)
    # replay the same draws
    g.manual_seed(0)
    dy = torch.randint(0, 5, (2,), generator=g)
    dx = torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        ref = padded[i, :, dy[i] : dy[i] + 5, dx[i] : dx[i] + 6]
        if flip[i]:
            ref = ref.flip(2)
        assert torch.equal(out[i], ref)


def test_batcher_is_deterministic_in_step_and_covers_epoch():
    cfg = cfg_of(**{"data.subset": 100})
    b = load_data(cfg)
    bt = DeviceBatcher(b, 32, 4, seed=3, pad=1, flip=False)
    xs = [bt.batch_at(s) for s in range(4)]
    ys = torch.cat([y for _, y in xs])
    assert ys.shape[0] == 100  # one epoch sees every sample once
    assert sorted(ys.tolist()) == sorted(b.y_train.tolist())
    bt2 = DeviceBatcher(b, 32, 4, seed=3, pad=1, flip=False)
    x2, _ = bt2.batch_at(2)  # random access == sequential
    assert torch.equal(x2, xs[2][0])


def test_synthetic_and_teacher_student():
    b = load_data(cfg_of(**{"data.name": '"synthetic"', "data.dim": 5, "data.n_train": 50, "data.n_test": 20}))
    assert b.x_train.shape == (50, 5) and b.task == "classification"
    t = load_data(cfg_of(**{"data.name": '"teacher_student"', "data.out_dim": 3}))
    assert t.y_train.shape[1] == 3 and t.task == "regression" and t.y_train.dtype == torch.float32


def test_missing_cifar_gives_clear_error(tmp_path):
    cfg = cfg_of(**{"data.name": '"cifar10"', "data.root": f'"{tmp_path}"'})
    with pytest.raises(ConfigError) as e:
        load_data(cfg)
    assert e.value.key == "data.root" and "cifar-10-batches-py" in str(e.value)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("mlp", (1, 8, 8)),
        ("cnn", (1, 8, 8)),
        ("vgg11", (3, 32, 32)),
        ("resnet20", (3, 32, 32)),
        ("uv", (4,)),
    ],
)
def test_models_forward_and_name_their_blocks(name, shape):
    cfg = cfg_of(**{"model.name": f'"{name}"', "model.batch_norm": "true"})
    m = build_model(cfg, shape, 10)
    out = m(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    names = dict(m.named_modules())
    assert all(b in names for b in m.heur_blocks)


def test_torchvision_model_by_name_and_bad_name():
    m = build_model(cfg_of(**{"model.name": '"tv:resnet18"'}), (3, 32, 32), 7)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7) and "layer4" in m.heur_blocks
    with pytest.raises(ConfigError, match="did you mean 'tv:resnet18'"):
        build_model(cfg_of(**{"model.name": '"tv:resnet81"'}), (3, 32, 32), 7)


def test_uv_model_matches_its_formula():
    m = build_model(cfg_of(**{"model.name": '"uv"', "model.width": 50}), (3,), 2)
    x = torch.randn(4, 3)
    ref = torch.einsum("nd,bd,nk->bk", m.u, x, m.v) / math.sqrt(50)
    assert torch.allclose(m(x), ref, atol=1e-6)


@pytest.mark.parametrize("param", ["sp", "ntk", "mup"])
def test_parametrizations_keep_preactivations_order_one(param):
    """At init, hidden pre-activations have O(1) variance whatever the width (sp and ntk agree in
    distribution at init); muP's output shrinks like 1/sqrt(width)."""
    torch.manual_seed(0)
    x = torch.randn(512, 64)
    outs = []
    for width in (256, 2048):
        cfg = cfg_of(**{"model.name": '"mlp"', "model.width": width, "model.parametrization": f'"{param}"'})
        m = build_model(cfg, (64,), 1)
        h = m.fc1(x)
        assert 0.7 < h.var().item() < 1.4
        outs.append(m(x).var().item())
    if param == "mup":
        assert outs[1] < outs[0] / 4
    else:
        assert 0.3 < outs[1] / outs[0] < 3


def _fake_cifar10(root, n_per_batch=20):
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n_per_batch).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    return folder


def test_cifar10_from_a_local_folder(tmp_path):
    import pickle

    folder = _fake_cifar10(tmp_path)
    cfg = cfg_of(
        **{
            "data.name": '"cifar10"',
            "data.root": f'"{tmp_path}"',
            "data.normalize": "false",
            "data.checksums": "false",
        }
    )
    b = load_data(cfg)
    assert b.x_train.shape == (100, 3, 32, 32) and b.x_test.shape == (20, 3, 32, 32)
    with open(folder / "data_batch_2", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    # sample 0 of batch 2 is training sample 20: channel-major rows of 32x32, scaled to [0, 1]
    assert torch.allclose(b.x_train[20], torch.tensor(d[b"data"][0]).float().reshape(3, 32, 32) / 255)
    assert b.y_train[20].item() == d[b"labels"][0]


@pytest.mark.parametrize("name", ["digits", "synthetic", "teacher_student", "cifar10"])
def test_data_shape_without_loading_matches_the_loaded_data(name, tmp_path):
    from heur.core.data import data_shape

    sets = {"data.name": f'"{name}"', "data.root": f'"{tmp_path}"', "data.checksums": "false"}
    if name == "cifar10":
        _fake_cifar10(tmp_path)
    b = load_data(cfg_of(**sets))
    assert data_shape(cfg_of(**sets).data) == (b.input_shape, b.num_outputs)


# --------------------------------------------------------------------------- CIFAR files are data, never code


class _RunsACommand:
    """Unpickling this calls os.system: the classic crafted pickle."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        import os

        return (os.system, (self.cmd,))


def _cifar_cfg(root, checksums=True):
    return cfg_of(
        **{"data.name": '"cifar10"', "data.root": f'"{root}"', "data.checksums": "true" if checksums else "false"}
    )


@pytest.mark.parametrize("where", ["value", "top"])
def test_a_crafted_cifar_batch_does_not_run_its_command(tmp_path, where):
    import pickle

    folder = _fake_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = _RunsACommand(f"touch {marker}")
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": evil, b"labels": [1]} if where == "value" else evil, f)
    # checksums on (the default): the md5 differs from torchvision's, refused before unpickling
    with pytest.raises(ConfigError) as e:
        load_data(_cifar_cfg(tmp_path))
    assert e.value.key == "data.checksums" and "data_batch_1" in str(e.value) and "\n" not in str(e.value)
    # checksums off: the restricted unpickler refuses the global, naming the file
    with pytest.raises(ConfigError) as e:
        load_data(_cifar_cfg(tmp_path, checksums=False))
    msg = str(e.value)
    assert "data_batch_3" in msg and ("system" in msg) and "\n" not in msg
    assert not marker.exists()


def test_a_crafted_cifar_batch_is_refused_at_preflight(tmp_path):
    """heur run never gets as far as a run: the md5 check is part of the preflight."""
    import pickle

    from heur.core.preflight import check_run

    folder = _fake_cifar10(tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_RunsACommand(f"touch {tmp_path / 'pwned'}"), f)
    with pytest.raises(ConfigError, match="md5"):
        check_run(_cifar_cfg(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_cifar_folder_with_the_published_checksums_loads(tmp_path, monkeypatch):
    """With data.checksums on, files whose md5 (hashlib's, computed here) is the published one load."""
    import hashlib

    import heur.core.data as D

    folder = _fake_cifar10(tmp_path)
    table = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in D.CIFAR_MD5["cifar10"]}
    monkeypatch.setitem(D.CIFAR_MD5, "cifar10", table)
    assert load_data(_cifar_cfg(tmp_path)).x_train.shape == (100, 3, 32, 32)
    raw = bytearray((folder / "data_batch_5").read_bytes())
    raw[-100] ^= 1  # one bit of one pixel off
    (folder / "data_batch_5").write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="data_batch_5: md5"):
        load_data(_cifar_cfg(tmp_path))


def test_the_published_cifar_md5s_are_torchvisions():
    """The table as torchvision's cifar.py publishes it (an independent copy of the six + two sums)."""
    from heur.core.data import CIFAR_MD5

    assert CIFAR_MD5["cifar10"]["data_batch_1"] == "c99cafc152244af753f735de768cd75f"
    assert CIFAR_MD5["cifar10"]["test_batch"] == "40351d587109b95175f43aff81a1287e"
    assert CIFAR_MD5["cifar100"] == {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    }
