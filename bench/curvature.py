"""Top Hessian eigenvalue of a small CNN on a batch of 512 images: heur (Lanczos with full
reorthogonalisation over retained-graph HVPs) against PyHessian's power iteration.

    .venv/bin/python bench/curvature.py [--device cpu|cuda] [--repeats 3]

Needs ``pip install pyhessian`` (benchmark only, not a project dependency); without it a
faithful reimplementation of PyHessian's loop is used (same HVP through the gradient graph,
same normalisation, same stopping rule: relative change of the Rayleigh quotient < tol) and
the output says so. Also prints the per-HVP cost of the two HVP formulations heur considered
(double backward through a retained gradient graph vs torch.func jvp-of-grad), and the cost
of one HVP relative to one training step (forward + backward + SGD step) on the same batch.

    .venv/bin/python bench/curvature.py --overhead catapult_mlp,warmup_sharpness,gi_adam,catapult_uv

instead times one run of each preset in-process (setup + train, no interpreter start-up) with
and without its ``[probes.sharpness]`` section and prints the probe's overhead in percent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from heur.core.measure.curvature import _hessian_operator, _params, hessian_eigenvalues_with_info


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )


def synthetic_batch(n: int, device: str):
    """Images with class-dependent low-frequency patterns plus noise (learnable, not trivial)."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(10, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = nn.functional.interpolate(protos[y], size=32, mode="bilinear", align_corners=False)
    x = x + 0.8 * torch.randn(n, 3, 32, 32, generator=g)
    return x.to(device), y.to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pyhessian_top(model, loss_fn, x, y, tol, device):
    """(eigenvalue, hvps, implementation) from PyHessian's power iteration."""
    try:
        import pyhessian  # noqa: F401  (its package attribute 'hessian' is the class)
    except ImportError:
        return _pyhessian_like(model, loss_fn, x, y, tol) + ("reimplementation (pyhessian not installed)",)
    ph = sys.modules["pyhessian.hessian"]
    count = [0]
    orig = ph.hessian_vector_product

    def counted(*a, **k):
        count[0] += 1
        return orig(*a, **k)

    ph.hessian_vector_product = counted
    try:
        h = ph.hessian(model, loss_fn, data=(x, y), cuda=device.startswith("cuda"))
        vals, _ = h.eigenvalues(maxIter=100, tol=tol, top_n=1)
    finally:
        ph.hessian_vector_product = orig
        model.zero_grad(set_to_none=True)
    return vals[0], count[0], "pyhessian " + getattr(sys.modules.get("pyhessian"), "__version__", "0.1")


def _pyhessian_like(model, loss_fn, x, y, tol, max_iter=100):
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v = [torch.randn_like(p) for p in params]
    nrm = torch.sqrt(sum((a * a).sum() for a in v))
    v = [a / (nrm + 1e-6) for a in v]
    eig, hvps = None, 0
    for _ in range(max_iter):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        hvps += 1
        tmp = sum((a * b).sum() for a, b in zip(hv, v)).item()
        nrm = torch.sqrt(sum((a * a).sum() for a in hv))
        v = [a / (nrm + 1e-6) for a in hv]
        if eig is not None and abs(eig - tmp) / (abs(eig) + 1e-6) < tol:
            break
        eig = tmp
    model.train()
    return tmp, hvps


def unit_costs(model, loss_fn, x, y, device, reps=8):
    """(min, median) seconds of: one HVP through the retained gradient graph (heur), one HVP by
    torch.func jvp-of-grad, one training step (fwd + bwd + SGD step on a copy of the model),
    interleaved so that a busy machine slows all of them alike."""
    import copy

    from torch.func import functional_call, grad, jvp

    params = _params(model)
    op, _, _ = _hessian_operator(model, loss_fn, x, y, params)
    n = sum(p.numel() for p in params)
    v = torch.randn(n, device=x.device)
    pd = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    vd = dict(zip(pd, torch.split(v, [p.numel() for p in params])))
    vd = {k: t.view_as(pd[k]) for k, t in vd.items()}

    def loss_p(p):
        return loss_fn(functional_call(model, p, (x,)), y)

    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(m(x), y).backward()
        opt.step()

    fns = {"graph": lambda: op(v), "func": lambda: jvp(grad(loss_p), (pd,), (vd,))[1], "step": step}
    for f in fns.values():
        f()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            sync(device)
            t = time.perf_counter()
            f()
            sync(device)
            ts[k].append(time.perf_counter() - t)
    return {k: (min(t), statistics.median(t)) for k, t in ts.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--pyhessian-tols",
        default="1e-3,1e-4",
        help="PyHessian stopping tolerances to run (its tol is not its accuracy)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default); 1 is steadier on a shared machine",
    )
    ap.add_argument("--pretrain", type=int, default=30, help="SGD steps before measuring")
    ap.add_argument(
        "--overhead",
        default="",
        help="comma-separated presets (e.g. catapult_mlp,warmup_sharpness,gi_adam,catapult_uv): "
        "measure the sharpness probe's share of a run's wall time instead",
    )
    args = ap.parse_args()
    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.overhead:
        probe_overhead([p.strip() for p in args.overhead.split(",") if p.strip()], args.repeats)
        return
    torch.manual_seed(0)
    model = cnn().to(dev)
    x, y = synthetic_batch(args.batch, dev)
    loss_fn = nn.functional.cross_entropy
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(args.pretrain):  # a point a little into training, not the init
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"device {dev}, threads {torch.get_num_threads()}, CNN with {n_params} parameters, "
        f"batch {args.batch} x 3x32x32, cross-entropy, after {args.pretrain} SGD steps"
    )

    ref = hessian_eigenvalues_with_info(model, loss_fn, x, y, k=1, tol=1e-9, max_iter=150, seed=123)
    lam = ref.top
    print(f"reference lambda_max (Lanczos, tol 1e-9): {lam:.6f} ({ref.hvps} HVPs, converged {ref.converged})")

    tols = [float(t) for t in args.pyhessian_tols.split(",")]
    names = ["heur"] + [f"pyhessian@{t:g}" for t in tols]
    rows: dict[str, list] = {k: [] for k in names}
    impl = ""
    for r in range(args.repeats):  # interleaved, so load changes hit every method alike
        sync(dev)
        t = time.perf_counter()
        res = hessian_eigenvalues_with_info(model, loss_fn, x, y, k=1, tol=1e-3, seed=r)
        sync(dev)
        rows["heur"].append((time.perf_counter() - t, res.hvps, res.top))
        for tol, name in zip(tols, names[1:]):
            torch.manual_seed(r)
            sync(dev)
            t = time.perf_counter()
            val, hv, impl = pyhessian_top(model, loss_fn, x, y, tol, dev)
            sync(dev)
            rows[name].append((time.perf_counter() - t, hv, val))
            model.train()
    print(f"PyHessian implementation: {impl}; heur: Lanczos, tol 1e-3 (stopping on its error estimate)")
    print(f"{'':16s} {'median s':>9s} {'min s':>7s}  {'runs (s)':<30s} {'HVPs':<18s} {'max rel err':>11s}")
    med, mn, hv_med, worst = {}, {}, {}, {}
    for name, rs in rows.items():
        ts = [a for a, _, _ in rs]
        med[name], mn[name] = statistics.median(ts), min(ts)
        hv_med[name] = statistics.median(h for _, h, _ in rs)
        worst[name] = max(abs(v - lam) / abs(lam) for _, _, v in rs)
        print(
            f"{name:16s} {med[name]:9.3f} {mn[name]:7.3f}  {' '.join(f'{a:.2f}' for a in ts):<30s} "
            f"{' '.join(str(h) for _, h, _ in rs):<18s} {worst[name]:11.2e}"
        )
    for name in names[1:]:
        ok = "reaches" if worst[name] <= 1e-3 else "MISSES"
        print(
            f"{name}/heur: wall {med[name] / med['heur']:.2f}x (median), {mn[name] / mn['heur']:.2f}x (min); "
            f"HVPs {hv_med[name] / hv_med['heur']:.2f}x -- {name} {ok} 1e-3 relative accuracy "
            f"(heur worst {worst['heur']:.1e}); goal >= 2x"
        )

    c = unit_costs(model, loss_fn, x, y, dev)
    (g0, g1), (f0, f1), (s0, s1) = c["graph"], c["func"], c["step"]
    print("unit costs, min / median of 8 interleaved runs:")
    print(f"  one training step (fwd+bwd+SGD):               {s0 * 1e3:7.1f} / {s1 * 1e3:7.1f} ms")
    print(
        f"  one HVP, retained-graph double backward (heur): {g0 * 1e3:7.1f} / {g1 * 1e3:7.1f} ms"
        f" = {g0 / s0:.2f} / {g1 / s1:.2f} training steps"
    )
    print(
        f"  one HVP, torch.func jvp(grad) (not used):       {f0 * 1e3:7.1f} / {f1 * 1e3:7.1f} ms"
        f" = {f0 / s0:.2f} / {f1 / s1:.2f} training steps"
    )

    # what the sharpness probe does between measurements: warm start from the last eigenvector
    for _ in range(10):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    cold = hessian_eigenvalues_with_info(model, loss_fn, x, y, k=1, tol=1e-3, seed=7)
    warm = hessian_eigenvalues_with_info(model, loss_fn, x, y, k=1, tol=1e-3, seed=7, v0=ref.vector)
    truth = hessian_eigenvalues_with_info(model, loss_fn, x, y, k=1, tol=1e-9, max_iter=150).top
    print(
        f"10 SGD steps later (lambda_max {truth:.5f}): cold start {cold.hvps} HVPs "
        f"(rel err {abs(cold.top - truth) / truth:.1e}), warm start from the previous eigenvector "
        f"{warm.hvps} HVPs (rel err {abs(warm.top - truth) / truth:.1e})"
    )


# --------------------------------------------------------------------------- probe overhead

OVERHEAD_PRESETS = {  # preset -> overrides picking one representative run of it
    "catapult_uv": ["optim.lr_ntk=3.0"],
    "catapult_mlp": ["optim.lr_ntk=8.0"],
    "warmup_sharpness": ["optim.lr_ntk=48.0", "schedule.warmup.steps=32"],
    "gi_adam": [],
}


def _timed_run(cfg, root) -> tuple[float, float]:
    """(seconds of setup + train + finish of one run in this process, no interpreter start-up;
    seconds the sharpness probe itself took, from its events)."""
    import json
    import tempfile
    from pathlib import Path

    from heur.core.config import Experiment
    from heur.core.runs import create_experiment, run_dirs
    from heur.core.train import Run

    exp = Experiment(name="bench", description="", source="", raw={}, runs={"r": cfg}, resolved=cfg.to_dict())
    exp_dir = create_experiment(exp, Path(tempfile.mkdtemp(dir=root)))
    (rd,) = run_dirs(exp_dir)
    t = time.perf_counter()
    run = Run(rd)
    run.setup()
    state, reason, last = run.train()
    run.finish(state, reason, last)
    wall = time.perf_counter() - t
    probe = 0.0
    for line in (rd / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("kind") == "sharpness":
            probe += ev.get("seconds", 0.0)
    return wall, probe


def probe_overhead(presets: list[str], repeats: int) -> None:
    """Wall time of a preset's run with and without ``[probes.sharpness]`` (interleaved)."""
    import shutil
    import tempfile
    from pathlib import Path

    from heur.core.config import load_experiment

    root = Path(tempfile.mkdtemp(prefix="heur-bench-"))
    here = Path(__file__).resolve().parents[1] / "presets"
    print(
        "sharpness probe overhead: one run of each preset, in-process setup+train, "
        f"median of {repeats} interleaved pairs"
    )
    try:
        for name in presets:
            exp = load_experiment(here / f"{name}.toml", OVERHEAD_PRESETS.get(name, []))
            run_name, cfg = next(iter(exp.runs.items()))
            off = cfg.model_copy(deep=True)
            off.probes.sharpness = None
            t_on, t_off, t_probe = [], [], []
            for _ in range(repeats):
                t_off.append(_timed_run(off, root)[0])
                w, p = _timed_run(cfg, root)
                t_on.append(w)
                t_probe.append(p)
            a, b, c = statistics.median(t_off), statistics.median(t_on), statistics.median(t_probe)
            sh = cfg.probes.sharpness
            print(
                f"  {name:17s} ({run_name}, every {sh.every}, batch {sh.batch}, max_iter {sh.max_iter}, "
                f"tol {sh.tol:g}): without {a:.2f} s, with {b:.2f} s -> overhead {100 * (b - a) / a:+.1f}%; "
                f"the probe's own time {c:.2f} s = {100 * c / a:.1f}% of the run without it  (goal <= 25%)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
