"""Placeholder optimizers (the full module is being written)."""

from __future__ import annotations

from typing import Any

import torch


def effective_lr(cfg: Any, lr: float, batch_size: int) -> float:
    return lr * batch_size / cfg.base_batch_size if cfg.lr_scaling == "linear" else lr


def build_optimizer(model: torch.nn.Module, cfg: Any, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
