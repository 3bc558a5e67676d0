"""Models by name, each with stable human-readable block names (``model.heur_blocks``).

``build_model(cfg, input_shape, num_outputs)``:

- ``mlp``: ``depth`` hidden layers of ``width`` (blocks ``fc1..fcN``, ``out``), activation and
  parametrization (``sp`` | ``ntk`` | ``mup``, see :class:`ParamLinear`).
- ``uv``: the two-layer linear network of Lewkowycz et al. 2020, f(x) = v^T u x / sqrt(n), with
  u, v ~ N(0, 1) (blocks ``u``, ``v``).
- ``cnn``: ``channels`` conv3x3 (+ batch norm) + ReLU + max-pool blocks, then a stack of hidden
  fc layers (``fc``, default one of ``width``) with ReLU and the output layer (blocks
  ``conv1..convK``, ``fc1..fcM``, ``out``).
- ``vgg11`` / ``vgg16``: the CIFAR variants. ``head = "fc"`` (default): the classifier of Gotmare
  et al.'s and Garipov et al.'s VGG, the flattened conv output then hidden fc layers (``fc``,
  default 512, 512), each Dropout(``dropout``, default 0.5) + Linear + ReLU, and the output layer
  (blocks ``conv1..convN``, ``fc1``, ``fc2``, ``out``). ``head = "pool"``: global average pooling
  and one linear layer (heur's earlier head; blocks ``conv1..convN``, ``fc``).
- ``resnet20``: He et al.'s CIFAR ResNet (blocks ``conv1``, ``layer1.0`` ... ``layer3.2``, ``fc``).
- ``tv:<name>``: any torchvision classification model, untrained (blocks: its top-level children).

``model.init_scale`` multiplies the init std of every weight (the seed paper's "larger init
variance" variant E).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from .errors import ConfigError

_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "linear": nn.Identity}


class ParamLinear(nn.Module):
    """A linear layer under a parametrization.

    - ``sp`` (standard): W ~ N(0, g^2 s^2 / fan_in), forward W x.
    - ``ntk``: W ~ N(0, s^2), forward (g / sqrt(fan_in)) W x.
    - ``mup``: like ``ntk`` but the output layer's multiplier is g / fan_in instead of
      g / sqrt(fan_in) (the muP output scaling, Yang & Hu 2021; with one global learning rate this
      is muP up to the input layer's learning-rate multiplier). ``s`` is ``init_scale``,
      ``g`` the activation's gain (sqrt 2 for ReLU).
    Biases start at zero.
    """

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        param: str = "sp",
        gain: float = 1.0,
        scale: float = 1.0,
        bias: bool = True,
        is_output: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None
        if param == "sp":
            std, self.mult = gain * scale / math.sqrt(fan_in), 1.0
        elif param == "ntk" or not is_output:
            std, self.mult = scale, gain / math.sqrt(fan_in)
        else:  # mup output layer
            std, self.mult = scale, gain / fan_in
        nn.init.normal_(self.weight, 0.0, std)
        self.param = param

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.mult == 1.0 else self.weight * self.mult
        return nn.functional.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, param={self.param}"


class MLP(nn.Module):
    def __init__(
        self, in_dim: int, out_dim: int, width: int, depth: int, activation: str, param: str, scale: float, bias: bool
    ):
        super().__init__()
        gain = math.sqrt(2.0) if activation == "relu" else 1.0
        self.flatten = nn.Flatten()
        self.act = _ACT[activation]()
        dims = [in_dim] + [width] * depth
        names = []
        for i in range(depth):
            setattr(self, f"fc{i + 1}", ParamLinear(dims[i], dims[i + 1], param, gain if i else 1.0, scale, bias))
            names.append(f"fc{i + 1}")
        self.out = ParamLinear(dims[-1], out_dim, param, 1.0, scale, bias, is_output=True)
        self.depth = depth
        self.heur_blocks = names + ["out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flatten(x)
        for i in range(self.depth):
            h = self.act(getattr(self, f"fc{i + 1}")(h))
        return self.out(h)


class UV(nn.Module):
    """f(x) = v^T u x / sqrt(n): u is (n, d), v is (n, k), both N(0, s^2)."""

    def __init__(self, in_dim: int, out_dim: int, width: int, scale: float):
        super().__init__()
        self.flatten = nn.Flatten()
        self.n = width
        self.u = nn.Parameter(torch.randn(width, in_dim) * scale)
        self.v = nn.Parameter(torch.randn(width, out_dim) * scale)
        self.heur_blocks: list[str] = []  # no nonlinear blocks: CCA has nothing to look at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.flatten(x) @ self.u.t()) @ self.v / math.sqrt(self.n)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, bn: bool, pool: bool):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


def _fc_stack(owner: nn.Module, fan_in: int, hidden: list[int], out_dim: int, dropout: float) -> list[str]:
    """Hidden fc blocks ``fc1..fcM`` (each [Dropout(p) +] Linear + ReLU, dropout before the linear
    layer as in Garipov et al.'s VGG) and the output layer ``out``, registered on ``owner`` as
    top-level modules; returns their block names."""
    names = []
    for i, width in enumerate(hidden):
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        layers += [nn.Linear(fan_in, width), nn.ReLU(inplace=True)]
        setattr(owner, f"fc{i + 1}", nn.Sequential(*layers))
        names.append(f"fc{i + 1}")
        fan_in = width
    owner.out = nn.Linear(fan_in, out_dim)
    owner.n_fc = len(hidden)
    return names + ["out"]


def _run_fc(owner: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i in range(owner.n_fc):
        h = getattr(owner, f"fc{i + 1}")(h)
    return owner.out(h)


class CNN(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_dim: int,
        channels: list[int],
        fc: list[int],
        bn: bool,
        dropout: float = 0.0,
    ):
        super().__init__()
        c, h, w = input_shape
        names = []
        for i, cout in enumerate(channels):
            pool = min(h, w) >= 2
            setattr(self, f"conv{i + 1}", ConvBlock(c, cout, bn, pool))
            names.append(f"conv{i + 1}")
            c = cout
            if pool:
                h, w = h // 2, w // 2
        self.n_conv = len(channels)
        self.flatten = nn.Flatten()
        self.heur_blocks = names + _fc_stack(self, c * h * w, fc, out_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_conv):
            x = getattr(self, f"conv{i + 1}")(x)
        return _run_fc(self, self.flatten(x))


_VGG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG: 3x3 convs (+BN) and max-pools, then the classifier: ``head = "fc"`` the flattened
    maps through the hidden fc stack ``fc`` (Dropout + Linear + ReLU each) and the output layer;
    ``head = "pool"`` global average pooling and one linear layer ``fc``."""

    def __init__(
        self,
        kind: str,
        input_shape: tuple[int, ...],
        out_dim: int,
        bn: bool,
        head: str = "fc",
        fc: tuple[int, ...] = (512, 512),
        dropout: float = 0.5,
    ):
        super().__init__()
        names: list[str] = []
        in_ch, h, w = input_shape
        c, k = in_ch, 0
        spec = _VGG[kind]
        for i, v in enumerate(spec):
            if v == "M":
                continue
            k += 1
            pool = i + 1 < len(spec) and spec[i + 1] == "M"
            if pool and min(h, w) < 2:
                raise ConfigError(
                    f"{kind} halves the input {len([x for x in spec if x == 'M'])} times: "
                    f"{input_shape[1]}x{input_shape[2]} inputs are too small",
                    key="model.name",
                )
            setattr(self, f"conv{k}", ConvBlock(c, int(v), bn, pool))
            names.append(f"conv{k}")
            c = int(v)
            if pool:
                h, w = h // 2, w // 2
        self.n_conv = k
        self.head = head
        if head == "pool":
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(c, out_dim)
            self.heur_blocks = names + ["fc"]
        else:
            self.heur_blocks = names + _fc_stack(self, c * h * w, list(fc), out_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_conv):
            x = getattr(self, f"conv{i + 1}")(x)
        if self.head == "pool":
            return self.fc(torch.flatten(self.pool(x), 1))
        return _run_fc(self, torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, bn: bool):
        super().__init__()
        norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not bn)
        self.bn2 = norm(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not bn), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """He et al. 2016's CIFAR ResNet-20 (3 stages x 3 basic blocks, 16/32/64 channels)."""

    def __init__(self, in_ch: int, out_dim: int, bn: bool = True):
        super().__init__()
        norm = nn.BatchNorm2d(16) if bn else nn.Identity()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, 16, 3, 1, 1, bias=not bn), norm, nn.ReLU(inplace=True))
        names = ["conv1"]
        cin = 16
        for stage, cout in enumerate((16, 32, 64), start=1):
            blocks = []
            for j in range(3):
                stride = 2 if (j == 0 and stage > 1) else 1
                blocks.append(BasicBlock(cin, cout, stride, bn))
                names.append(f"layer{stage}.{j}")
                cin = cout
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, out_dim)
        self.heur_blocks = names + ["fc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _scale_init(model: nn.Module, scale: float) -> None:
    if scale == 1.0:
        return
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(scale)


def build_model(cfg: Any, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """The run's model (``cfg`` is a RunConfig), initialised from ``cfg.seed``."""
    m = cfg.model
    torch.manual_seed(cfg.seed)
    in_dim = int(math.prod(input_shape))
    if m.name == "mlp":
        model: nn.Module = MLP(
            in_dim, num_outputs, m.width, m.depth, m.activation, m.parametrization, m.init_scale, m.bias
        )
        return model
    if m.name == "uv":
        return UV(in_dim, num_outputs, m.width, m.init_scale)
    if len(input_shape) != 3:
        raise ConfigError(f"model {m.name} needs image data (C, H, W), got input shape {input_shape}", key="model.name")
    if m.head != "fc" and m.name not in _VGG:
        raise ConfigError(f'head = "{m.head}" is a VGG option; {m.name} has an fc head', key="model.head")
    if m.name == "cnn":
        fc = [m.width] if m.fc is None else list(m.fc)
        model = CNN(input_shape, num_outputs, m.channels, fc, m.batch_norm, m.dropout or 0.0)
    elif m.name in _VGG:
        fc = [512, 512] if m.fc is None else list(m.fc)
        drop = 0.5 if m.dropout is None else m.dropout
        model = VGG(m.name, input_shape, num_outputs, m.batch_norm, m.head, fc, drop)
    elif m.name == "resnet20":
        model = ResNet20(input_shape[0], num_outputs, m.batch_norm)
    else:
        model = _torchvision_model(m.name[3:], input_shape, num_outputs)
    _scale_init(model, m.init_scale)
    return model


def meta_model(cfg: Any) -> Optional[nn.Module]:
    """The run's model built on the meta device from the data's known shape (no memory, no
    compute, no data loaded): what preflight checks model against data with. None when the
    dataset's shape is not known without loading it. Raises what :func:`build_model` raises."""
    from .data import data_shape

    shape = data_shape(cfg.data)
    if shape is None:
        return None
    with torch.device("meta"):
        return build_model(cfg, *shape)


def _torchvision_model(name: str, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    import torchvision.models as tvm

    if name not in tvm.list_models(module=tvm):
        import difflib

        close = difflib.get_close_matches(name, tvm.list_models(module=tvm), n=1)
        hint = f" (did you mean 'tv:{close[0]}'?)" if close else ""
        raise ConfigError(f"torchvision has no classification model {name!r}{hint}", key="model.name")
    if input_shape[0] != 3:
        raise ConfigError(
            f"torchvision models expect 3 input channels, the data has {input_shape[0]}", key="model.name"
        )
    model = tvm.get_model(name, weights=None, num_classes=num_outputs)
    model.heur_blocks = [n for n, _ in model.named_children()]
    return model
