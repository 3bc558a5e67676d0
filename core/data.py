"""Datasets as tensors on the training device, with batching and augmentation done in batch.

``load_data(cfg, device)`` returns a :class:`DataBundle`. Every dataset here fits in memory, so
it lives on the device as one tensor; :class:`DeviceBatcher` draws a permutation per epoch and
augments whole batches (random crop with padding, horizontal flip) with a generator seeded by
(seed, step), so a resumed run sees the very same batches as an uninterrupted one.

Datasets: ``digits`` (scikit-learn's bundled 8x8 digits), ``cifar10``, ``cifar100``, ``mnist``,
``fashion_mnist`` (torchvision, from a local ``root``), ``synthetic`` (Gaussian classification)
and ``teacher_student`` (regression targets from a random teacher network).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError

# train/test sizes of the torchvision sets (so steps can be planned without loading them)
_SIZES = {
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "mnist": (60000, 10000),
    "fashion_mnist": (60000, 10000),
}
_DIGITS_N = 1797


def _digits_split(cfg: Any) -> tuple[int, int]:
    n_test = int(round(_DIGITS_N * cfg.test_fraction))
    return _DIGITS_N - n_test, n_test


# train_size, data_shape, batch_size, steps_per_epoch and total_steps define what a config implies
# without loading anything; a run's callers read them once, through core.plan.RunPlan.


def train_size(cfg: Any) -> int:
    """Number of training samples of a ``[data]`` config, without loading the data."""
    if cfg.name == "digits":
        n = _digits_split(cfg)[0]
    elif cfg.name in ("synthetic", "teacher_student"):
        n = cfg.n_train
    else:
        n = _SIZES[cfg.name][0]
    return min(n, cfg.subset) if cfg.subset else n


def data_shape(cfg: Any) -> Optional[tuple[tuple[int, ...], int]]:
    """(input shape, outputs) of a ``[data]`` config without loading it (None if unknown)."""
    if cfg.name == "digits":
        return (1, 8, 8), 10
    if cfg.name == "synthetic":
        return (cfg.dim,), cfg.classes
    if cfg.name == "teacher_student":
        return (cfg.dim,), cfg.out_dim
    return {
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
        "mnist": ((1, 28, 28), 10),
        "fashion_mnist": ((1, 28, 28), 10),
    }.get(cfg.name)


def batch_size(cfg: Any) -> int:
    """The effective batch size of a run (``full_batch`` -> the whole training set)."""
    n = train_size(cfg.data)
    return n if cfg.train.full_batch else min(cfg.train.batch_size, n)


def steps_per_epoch(cfg: Any) -> int:
    n, b = train_size(cfg.data), batch_size(cfg)
    return max(1, n // b) if cfg.train.drop_last else math.ceil(n / b)


def total_steps(cfg: Any) -> int:
    if cfg.train.max_steps:
        return cfg.train.max_steps
    return max(1, int(round(cfg.train.epochs * steps_per_epoch(cfg))))


@dataclass
class DataBundle:
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    task: str  # "classification" | "regression"
    num_outputs: int  # classes, or regression outputs
    input_shape: tuple[int, ...]
    name: str = ""

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


# --------------------------------------------------------------------------- loading


_FOLDERS = {
    "cifar10": "cifar-10-batches-py/",
    "cifar100": "cifar-100-python/",
    "mnist": "MNIST/raw/",
    "fashion_mnist": "FashionMNIST/raw/",
}


def check_available(cfg: Any) -> None:
    """ConfigError (key data.root) if a torchvision dataset's folder is missing and download is off.

    Cheap (one stat; a CIFAR folder's md5s once per file), so that a preset naming missing or
    damaged data never starts a run."""
    if cfg.name in _FOLDERS and not cfg.download and not (Path(cfg.root) / _FOLDERS[cfg.name]).is_dir():
        raise _torchvision_root_error(cfg)
    if cfg.name in CIFAR_MD5 and (Path(cfg.root) / _FOLDERS[cfg.name]).is_dir():
        verify_cifar_folder(cfg, cached=True)


def _torchvision_root_error(cfg: Any) -> ConfigError:
    root = Path(cfg.root).resolve()
    folder = _FOLDERS[cfg.name]
    return ConfigError(
        f"dataset {cfg.name} not found under {root} (expected {root / folder}; "
        f"put the torchvision files there or set data.download = true on a connected machine)",
        key="data.root",
    )


# torchvision's published md5 of each file of the python-version CIFAR archives
CIFAR_MD5 = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "cifar100": {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
}
_md5_seen: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> md5: one pass per file and process


def _cifar_files(name: str) -> tuple[list[str], list[str], str]:
    if name == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"
    return ["train"], ["test"], "fine_labels"


def verify_cifar_folder(cfg: Any, cached: bool = False) -> None:
    """ConfigError naming the file if a CIFAR batch file is missing or (with ``data.checksums``,
    the default) its md5 is not torchvision's published one. ``cached``: reuse this process's
    earlier sums of an unchanged (path, size, mtime) file (the preflight of many runs)."""
    from .safe_pickle import md5_of

    folder = Path(cfg.root) / _FOLDERS[cfg.name]
    for fname, want in CIFAR_MD5[cfg.name].items():
        p = folder / fname
        try:
            st = p.stat()
        except OSError:
            raise ConfigError(f"{p}: missing (a {cfg.name} batch file)", key="data.root") from None
        if not cfg.checksums:
            continue
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        got = _md5_seen.get(key) if cached else None
        if got is None:
            got = _md5_seen[key] = md5_of(p)
        if got != want:
            raise ConfigError(
                f"{p}: md5 {got} is not the published {want} (a damaged or foreign file; "
                f"data.checksums = false reads your own copy, still without running code from it)",
                key="data.checksums",
            )


def _load_cifar_folder(cfg: Any):
    """CIFAR-10/100 from torchvision's python folder layout: each file's md5 checked against
    torchvision's (unless ``data.checksums = false``), then unpickled by core.safe_pickle, which
    runs no code from the file."""
    import pickle

    import numpy as np
    import torch

    from .safe_pickle import UnsafePickle, load_plain

    verify_cifar_folder(cfg)
    folder = Path(cfg.root) / _FOLDERS[cfg.name]
    train_files, test_files, key = _cifar_files(cfg.name)

    def read(files):
        xs, ys = [], []
        for name in files:
            p = folder / name
            try:
                d = load_plain(p)
            except UnsafePickle as e:
                raise ConfigError(f"{p}: refused, not a plain data file ({e})", key="data.root") from None
            except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
                raise ConfigError(f"cannot read {p} ({type(e).__name__})", key="data.root") from None
            d = (
                {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
                if isinstance(d, dict)
                else {}
            )
            if "data" not in d or key not in d:
                raise ConfigError(f"{p}: not a {cfg.name} batch (no 'data' and '{key}' entries)", key="data.root")
            try:
                xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(d[key], dtype=np.int64))
            except (ValueError, TypeError) as e:
                raise ConfigError(f"{p}: not a {cfg.name} batch ({e})", key="data.root") from None
        return torch.from_numpy(np.concatenate(xs)).float().div_(255), torch.from_numpy(np.concatenate(ys))

    xtr, ytr = read(train_files)
    xte, yte = read(test_files)
    return xtr, ytr, xte, yte, 100 if cfg.name == "cifar100" else 10


def _load_torchvision(cfg: Any):
    import numpy as np
    import torch
    import torchvision.datasets as tvd

    if cfg.name in ("cifar10", "cifar100") and (Path(cfg.root) / _FOLDERS[cfg.name]).is_dir():
        return _load_cifar_folder(cfg)

    cls = {
        "cifar10": tvd.CIFAR10,
        "cifar100": tvd.CIFAR100,
        "mnist": tvd.MNIST,
        "fashion_mnist": tvd.FashionMNIST,
    }[cfg.name]
    try:
        tr = cls(cfg.root, train=True, download=cfg.download)
        te = cls(cfg.root, train=False, download=cfg.download)
    except (RuntimeError, FileNotFoundError, OSError):
        raise _torchvision_root_error(cfg) from None

    def arr(ds):
        x = ds.data
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        if x.ndim == 3:  # (N, H, W) grey
            x = x[:, None]
        else:  # (N, H, W, C)
            x = x.transpose(0, 3, 1, 2)
        y = ds.targets
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))

    xtr, ytr = arr(tr)
    xte, yte = arr(te)
    xtr, xte = xtr.float().div_(255), xte.float().div_(255)
    classes = 100 if cfg.name == "cifar100" else 10
    return xtr, ytr, xte, yte, classes


def _split(n: int, n_test: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return perm[n_test:], perm[:n_test]


def load_data(cfg: Any, device: Any = "cpu") -> DataBundle:
    """Load the run's dataset (``cfg`` is a RunConfig) onto ``device``; deterministic by seed."""
    import numpy as np
    import torch

    d = cfg.data
    seed = cfg.seed if getattr(d, "seed", None) is None else d.seed
    task = "classification"
    if d.name == "digits":
        from sklearn.datasets import load_digits

        ds = load_digits()
        x = torch.from_numpy(ds.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
        y = torch.from_numpy(ds.target.astype(np.int64))
        tr, te = _split(len(x), _digits_split(d)[1], seed)
        xtr, ytr, xte, yte, out = x[tr], y[tr], x[te], y[te], 10
    elif d.name == "synthetic":
        g = torch.Generator().manual_seed(seed + 7919)
        means = torch.randn(d.classes, d.dim, generator=g) * 1.5
        n = d.n_train + d.n_test
        y = torch.randint(0, d.classes, (n,), generator=g)
        x = means[y] + torch.randn(n, d.dim, generator=g) * (1.0 + d.noise)
        xtr, ytr, xte, yte, out = x[: d.n_train], y[: d.n_train], x[d.n_train :], y[d.n_train :], d.classes
    elif d.name == "teacher_student":
        task = "regression"
        g = torch.Generator().manual_seed(seed + 104729)
        n = d.n_train + d.n_test
        x = torch.randn(n, d.dim, generator=g)
        w1 = torch.randn(d.dim, d.teacher_width, generator=g) / math.sqrt(d.dim)
        w2 = torch.randn(d.teacher_width, d.out_dim, generator=g) / math.sqrt(d.teacher_width)
        y = torch.relu(x @ w1) @ w2
        y = y + d.noise * torch.randn(y.shape, generator=g)
        xtr, ytr, xte, yte, out = x[: d.n_train], y[: d.n_train], x[d.n_train :], y[d.n_train :], d.out_dim
    else:
        xtr, ytr, xte, yte, out = _load_torchvision(d)
    if d.subset:
        xtr, ytr = xtr[: d.subset], ytr[: d.subset]
    if d.test_subset:
        xte, yte = xte[: d.test_subset], yte[: d.test_subset]
    if d.normalize and xtr.dim() == 4:
        mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
        std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    dev = torch.device(device)
    return DataBundle(
        x_train=xtr.to(dev),
        y_train=ytr.to(dev),
        x_test=xte.to(dev),
        y_test=yte.to(dev),
        task=task,
        num_outputs=out,
        input_shape=tuple(xtr.shape[1:]),
        name=d.name,
    )


# --------------------------------------------------------------------------- batching


def augment_policy(cfg: Any, bundle: DataBundle) -> tuple[int, bool]:
    """(crop padding, horizontal flip) for this dataset; (0, False) when off."""
    d = cfg.data
    if not d.augment or not bundle.is_image:
        return 0, False
    default_pad = {"cifar10": 4, "cifar100": 4, "mnist": 2, "fashion_mnist": 2, "digits": 1}
    default_flip = d.name in ("cifar10", "cifar100")
    pad = d.crop_padding if d.crop_padding is not None else default_pad.get(d.name, 0)
    flip = d.flip if d.flip is not None else default_flip
    return pad, flip


def augment_batch(x: Any, pad: int, flip: bool, gen: Any) -> Any:
    """Random crop with zero padding and random horizontal flip of a whole batch, on its device."""
    import torch

    n, c, h, w = x.shape
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
        rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
        cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
        idx_r = rows[:, None, :, None].expand(n, c, h, w + 2 * pad)
        x = torch.gather(padded, 2, idx_r)
        idx_c = cols[:, None, None, :].expand(n, c, h, w)
        x = torch.gather(x, 3, idx_c)
    if flip:
        mask = torch.rand(n, device=x.device, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


class DeviceBatcher:
    """Batches of a device-resident training set, deterministic in (seed, step).

    The permutation of epoch ``e`` is drawn from a generator seeded with (seed, e); the
    augmentation of step ``s`` from one seeded with (seed, s). ``batch_at(step)`` can thus
    begin anywhere, which makes resuming exact.
    """

    def __init__(
        self,
        bundle: DataBundle,
        batch: int,
        steps_per_epoch: int,
        seed: int,
        pad: int = 0,
        flip: bool = False,
        drop_last: bool = False,
    ):
        import torch

        self.b = bundle
        self.batch = batch
        self.spe = steps_per_epoch
        self.seed = seed
        self.pad, self.flip = pad, flip
        self.drop_last = drop_last
        self.device = bundle.x_train.device
        self._aug_gen = torch.Generator(device=self.device) if (pad or flip) else None
        self._perm_epoch = -1
        self._perm = None

    def _perm_for(self, epoch: int):
        import torch

        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            n = self.b.n_train
            if self.batch >= n:
                self._perm = None  # full batch: no shuffle needed
            else:
                self._perm = torch.randperm(n, generator=g).to(self.device, non_blocking=True)
            self._perm_epoch = epoch
        return self._perm

    def batch_at(self, step: int):
        epoch, i = divmod(step, self.spe)
        perm = self._perm_for(epoch)
        if perm is None:
            x, y = self.b.x_train, self.b.y_train
        else:
            idx = perm[i * self.batch : (i + 1) * self.batch]
            x, y = self.b.x_train.index_select(0, idx), self.b.y_train.index_select(0, idx)
        if self._aug_gen is not None:
            self._aug_gen.manual_seed(self.seed * 7_368_787 + step)
            x = augment_batch(x, self.pad, self.flip, self._aug_gen)
        return x, y
