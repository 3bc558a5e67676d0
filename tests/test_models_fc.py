"""The fc stacks: VGG's classifier as Gotmare et al. and Garipov et al. use it, and cnn's ``model.fc``.

Parameter counts are computed here from the architecture's definition (3x3 convs with bias, the
fc widths), not read from the model."""

import pytest
import torch
from torch import nn

from heur.core.config import expand
from heur.core.errors import ConfigError
from heur.core.models import build_model
from heur.core.plan import plan_run

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def cfg_of(**sets):
    return next(iter(expand({"name": "t"}, [f"{k}={v}" for k, v in sets.items()]).runs.values()))


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_params(cin: int, widths: list[int]) -> int:
    total = 0
    for c in widths:
        total += 9 * cin * c + c
        cin = c
    return total


def linear_params(dims: list[int]) -> int:
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def test_vgg16_has_the_papers_fc_stack_by_default():
    m = build_model(cfg_of(**{"model.name": '"vgg16"'}), (3, 32, 32), 10)
    convs = [v for v in VGG16 if v != "M"]
    assert m.heur_blocks == [f"conv{i + 1}" for i in range(13)] + ["fc1", "fc2", "out"]
    # 32x32 halved five times is 1x1: the classifier sees 512 features, 512 -> 512 -> 512 -> 10
    assert n_params(m) == conv_params(3, convs) + linear_params([512, 512, 512, 10])
    assert n_params(m) == 15_245_130  # the count of Garipov et al.'s VGG16 on CIFAR-10
    drops = [mod for name in ("fc1", "fc2") for mod in getattr(m, name) if isinstance(mod, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    assert torch.equal(m(x), m(x))  # dropout off in eval mode
    m.train()
    h = torch.ones(2, 512)
    assert not torch.equal(m.fc1(h), m.fc1(h))  # a fresh dropout mask each call in train mode


def test_vgg_pool_head_keeps_the_earlier_classifier():
    m = build_model(cfg_of(**{"model.name": '"vgg11"', "model.head": '"pool"'}), (3, 32, 32), 10)
    convs = [64, 128, 256, 256, 512, 512, 512, 512]
    assert m.heur_blocks == [f"conv{i + 1}" for i in range(8)] + ["fc"]
    assert n_params(m) == conv_params(3, convs) + linear_params([512, 10])
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg_custom_fc_and_dropout():
    cfg = cfg_of(**{"model.name": '"vgg11"', "model.fc": "[64]", "model.dropout": 0.0})
    m = build_model(cfg, (3, 32, 32), 7)
    assert m.heur_blocks[-2:] == ["fc1", "out"]
    assert not any(isinstance(x, nn.Dropout) for x in m.modules())
    assert n_params(m) == conv_params(3, [64, 128, 256, 256, 512, 512, 512, 512]) + linear_params([512, 64, 7])


def test_cnn_fc_stack_names_each_layer():
    cfg = cfg_of(**{"model.name": '"cnn"', "model.channels": "[16, 32]", "model.fc": "[64, 64]"})
    m = build_model(cfg, (1, 8, 8), 10)
    assert m.heur_blocks == ["conv1", "conv2", "fc1", "fc2", "out"]
    # two conv blocks halve 8x8 to 2x2: 32 * 4 features into the fc stack
    assert n_params(m) == conv_params(1, [16, 32]) + linear_params([128, 64, 64, 10])
    assert m(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    plan = plan_run(cfg)
    assert plan.blocks == ("conv1", "conv2", "fc1", "fc2", "out")
    none = build_model(cfg_of(**{"model.name": '"cnn"', "model.channels": "[16, 32]", "model.fc": "[]"}), (1, 8, 8), 10)
    assert none.heur_blocks == ["conv1", "conv2", "out"]
    assert n_params(none) == conv_params(1, [16, 32]) + linear_params([128, 10])


def test_cnn_default_is_one_fc_layer_of_width_unchanged():
    """fc unset = [width]: the same modules and, from the same seed, the same weights."""
    a = build_model(cfg_of(**{"model.name": '"cnn"', "model.width": 24}), (1, 8, 8), 10)
    b = build_model(cfg_of(**{"model.name": '"cnn"', "model.width": 24, "model.fc": "[24]"}), (1, 8, 8), 10)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and "fc1.0.weight" in sa
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.heur_blocks == ["conv1", "conv2", "fc1", "out"]


def test_fc_stack_bad_input():
    with pytest.raises(ConfigError) as e:
        cfg_of(**{"model.fc": "[64, 0]"})
    assert e.value.key == "model.fc"
    with pytest.raises(ConfigError) as e:
        cfg_of(**{"model.dropout": 1.0})
    assert e.value.key == "model.dropout"
    with pytest.raises(ConfigError) as e:
        build_model(cfg_of(**{"model.name": '"cnn"', "model.head": '"pool"'}), (1, 8, 8), 10)
    assert e.value.key == "model.head"
    with pytest.raises(ConfigError) as e:  # five halvings of 8x8 digits
        build_model(cfg_of(**{"model.name": '"vgg11"'}), (1, 8, 8), 10)
    assert e.value.key == "model.name" and "too small" in str(e.value)
