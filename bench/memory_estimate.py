"""How the ``--dry-run`` memory estimate (core.plan.memory_estimate) compares with what autograd
really keeps: for each run of a few presets, the estimate's activation bytes beside the bytes of
every tensor saved for the backward pass of one real forward on the CPU (counted with
torch.autograd.graph.saved_tensors_hooks, each storage once), and the parameter count beside the
model torch builds.

    python bench/memory_estimate.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    seen: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:  # weights are counted apart
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


def main() -> None:
    from heur.core.launch import prepare
    from heur.core.models import build_model
    from heur.core.plan import memory_estimate, plan_run

    presets = sys.argv[1:] or ["warmup_lb", "catapult_mlp", "distill"]
    print(f"{'preset/run':<34} {'params':>9} {'torch':>9} {'activ. est':>11} {'saved':>11} {'ratio':>6}")
    for name in presets:
        exp = prepare(ROOT / "presets" / f"{name}.toml", ["device=cpu"])
        for run, cfg in list(exp.runs.items())[:3]:
            if cfg.task != "train":
                continue
            p = plan_run(cfg)
            e = memory_estimate(cfg, p)
            model = build_model(cfg, p.input_shape, p.num_outputs)
            model.train()
            x = torch.randn(p.batch_size, *p.input_shape)
            s = saved_bytes(model, x)
            real = sum(q.numel() for q in model.parameters())
            print(
                f"{name + '/' + run:<34} {e.params:>9} {real:>9} {e.activations / 2**20:>9.2f}Mi "
                f"{s / 2**20:>9.2f}Mi {e.activations / max(s, 1):>6.2f}"
            )


if __name__ == "__main__":
    main()
