"""heur.core.measure.activations: captured outputs equal a manual forward of the sub-model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from heur.core.errors import ConfigError
from heur.core.measure.activations import CaptureError, capture, probe_indices, resolve_layers


def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 10),
        nn.ReLU(),
        nn.Linear(10, 3),
    )


def test_capture_equals_manual_forward_of_submodel():
    m = model()
    m.train()
    m(torch.randn(32, 1, 6, 6))  # move BN running stats away from their init
    x = torch.randn(70, 1, 6, 6)
    got = capture(m, x, ["1", "5", "7"], batch_size=16)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(got["1"], m[:2](x))
        torch.testing.assert_close(got["5"], m[:6](x))
        torch.testing.assert_close(got["7"], m(x))
    assert list(got) == ["1", "5", "7"]
    assert got["1"].dtype == torch.float32 and got["1"].shape == (70, 4, 6, 6)


def test_mode_restored_and_no_grad():
    m = model()
    m.train()
    m[1].eval()  # a mixed state must come back as it was
    out = capture(m, torch.randn(5, 1, 6, 6), ["5"])
    assert m.training and m[0].training and not m[1].training
    assert not out["5"].requires_grad
    m.eval()
    capture(m, torch.randn(5, 1, 6, 6), ["5"])
    assert not m.training


def test_dropout_off_during_capture():
    m = model().train()
    x = torch.randn(8, 1, 6, 6)
    a, b = capture(m, x, ["5"])["5"], capture(m, x, ["5"])["5"]
    torch.testing.assert_close(a, b)


def test_numpy_and_cpu_options():
    m = model()
    x = torch.randn(9, 1, 6, 6)
    got = capture(m, x, ["7"], as_numpy=True)
    assert isinstance(got["7"], np.ndarray) and got["7"].dtype == np.float32
    assert capture(m, x, ["7"], device="cpu")["7"].device.type == "cpu"


def test_auto_layers_conv_linear_in_forward_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 2)  # registered first, runs last
            self.conv = nn.Conv2d(1, 2, 3)
            self.mid = nn.Linear(8, 8)

        def forward(self, x):
            return self.head(torch.relu(self.mid(self.conv(x).flatten(1))))

    net = Net()
    assert resolve_layers(net, "auto") == ["head", "conv", "mid"]
    assert resolve_layers(net, "auto", example=torch.randn(2, 1, 4, 4)) == ["conv", "mid", "head"]
    net.heur_blocks = ["mid", "head"]
    assert resolve_layers(net, "auto") == ["mid", "head"]
    assert list(capture(net, torch.randn(3, 1, 4, 4))) == ["mid", "head"]


def test_bad_layer_name_lists_valid_names():
    with pytest.raises(CaptureError) as e:
        resolve_layers(model(), ["5", "fc9"])
    assert e.value.arg == "layers" and not isinstance(e.value, ConfigError)  # the edges name the key
    assert str(e.value) == "unknown layer 'fc9'; valid names: 0, 1, 2, 3, 4, 5, 6, 7"


def test_empty_probe_set_is_an_error():
    with pytest.raises(CaptureError) as e:
        probe_indices(0, 10)
    assert e.value.arg == "samples" and str(e.value) == "expected a positive number of samples, got 10 of 0"


def test_probe_indices_fixed_by_seed():
    a = probe_indices(1000, 100, seed=3)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, probe_indices(1000, 100, seed=3))
    assert not np.array_equal(a, probe_indices(1000, 100, seed=4))
    np.testing.assert_array_equal(probe_indices(50, 100, seed=0), np.arange(50))


def test_transform_applied_per_batch():
    m = model()
    x = torch.randn(40, 1, 6, 6)
    full = capture(m, x, ["1"], batch_size=7)["1"]
    pooled = capture(m, x, ["1"], batch_size=7, transform=lambda t: t.mean(dim=(2, 3)))["1"]
    assert pooled.shape == (40, 4)
    torch.testing.assert_close(pooled, full.mean(dim=(2, 3)))
