"""Lanczos stopping rules side by side: products to stop and the error reached, on one recorded
Lanczos run per operator, for heur's rule (the Ritz residual r <= tol*|theta|) and the rule it
replaced (the estimate min(r, r^2/gap) <= tol*|theta|, gap = distance to the next Ritz value).

    .venv/bin/python bench/lanczos_tol.py [--threads 1] [--seeds 5]

Operators: dense matrices with known spectra whose top eigenvalues are 1-3% apart, and the
Hessian of bench/curvature.py's CNN (cross-entropy, batch 128) after 30 SGD steps, whose truth
is a tol 1e-9 Lanczos run. Every rule is applied to the same recorded trajectory (same start
vector, same products), and heur's own ``lanczos`` is run too to check it stops where its rule
says. Prints, per operator and tol, the median products to stop and the worst relative error
over seeds, and the ratio of products (new / old).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from heur.core.measure.curvature import _hessian_operator, _params, hessian_eigenvalues_with_info, lanczos


def trajectory(op, n, like, m, seed):
    """Top-2 Ritz values and residuals after each product of a fully reorthogonalised Lanczos."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, generator=g, dtype=torch.float64).to(like)
    Q = [q / q.norm()]
    al, be, out = [], [], []
    for j in range(m):
        w = op(Q[j])
        al.append(float(w @ Q[j]))
        B = torch.stack(Q)
        for _ in range(2):
            w = w - B.t() @ (B @ w)
        b = float(w.norm())
        T = torch.diag(torch.tensor(al, dtype=torch.float64))
        if be:
            off = torch.tensor(be, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        th, S = torch.linalg.eigh(T)
        out.append((th.flip(0).tolist(), (b * S[-1, :].abs()).flip(0).tolist()))
        be.append(b)
        Q.append(w / b)
    return out


def old_rule(th, r, k, tol):
    for i in range(k):
        gaps = [abs(th[i] - t) for j, t in enumerate(th) if j != i]
        gap = min(gaps) if gaps else 0.0
        err = min(r[i], r[i] ** 2 / gap) if gap > 0 else r[i]
        if err > tol * abs(th[i]):
            return False
    return True


def new_rule(th, r, k, tol):
    return all(r[i] <= tol * abs(th[i]) for i in range(k))


def stop(tr, rule, k, tol):
    for j, (th, r) in enumerate(tr):
        if j + 1 >= k and rule(th, r, k, tol):
            return j
    return len(tr) - 1


def dense(spec, seed):
    n = spec.numel()
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = (Q * spec) @ Q.t()
    return (lambda v: A @ v), n, torch.linalg.eigvalsh(A).flip(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = 300
    g = torch.Generator().manual_seed(0)
    bulk = torch.rand(n, generator=g, dtype=torch.float64)
    ops = {
        "top two 3% apart": torch.cat([torch.tensor([1.0, 0.97], dtype=torch.float64), 0.6 * bulk[2:]]),
        "top three 3% apart": torch.cat([torch.tensor([1.0, 0.97, 0.94], dtype=torch.float64), 0.9 * bulk[3:]]),
        "1% apart, bulk < 0": torch.cat([torch.tensor([1.0, 0.99], dtype=torch.float64), 1.2 * bulk[2:] - 0.9]),
        "power law k^-1/2": 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 0.5,
    }
    print(
        f"{'operator':24s} {'k':>2s} {'tol':>6s} | {'old: products':>13s} {'worst err':>9s} | "
        f"{'new: products':>13s} {'worst err':>9s} | new/old products | heur lanczos products"
    )
    cases = [(name, k, tol) for name in list(ops) + ["CNN Hessian (batch 128)"] for k in (1, 2) for tol in (1e-2, 1e-3)]
    cnn_op = None
    for name, k, tol in cases:
        res = {"old": [], "new": [], "heur": []}
        for seed in range(args.seeds):
            if name in ops:
                op, dim, exact = dense(ops[name], seed)
                like = torch.zeros(1, dtype=torch.float64)
            else:
                if cnn_op is None:
                    from bench.curvature import cnn, synthetic_batch

                    torch.manual_seed(0)
                    model = cnn()
                    x, y = synthetic_batch(128, "cpu")
                    opt = torch.optim.SGD(model.parameters(), lr=0.05)
                    for _ in range(30):
                        opt.zero_grad()
                        torch.nn.functional.cross_entropy(model(x), y).backward()
                        opt.step()
                    params = _params(model)
                    hop, _, _ = _hessian_operator(model, torch.nn.functional.cross_entropy, x, y, params)
                    dim = sum(p.numel() for p in params)
                    truth = hessian_eigenvalues_with_info(
                        model, torch.nn.functional.cross_entropy, x, y, k=2, tol=1e-9, max_iter=200
                    ).values
                    cnn_op = (lambda v, hop=hop: hop(v.float()).double()), dim, torch.tensor(truth, dtype=torch.float64)
                op, dim, exact = cnn_op
                like = torch.zeros(1, dtype=torch.float64)
            tr = trajectory(op, dim, like, 120, seed)
            for rule_name, rule in (("old", old_rule), ("new", new_rule)):
                j = stop(tr, rule, k, tol)
                err = max(abs(tr[j][0][i] - float(exact[i])) / abs(float(exact[i])) for i in range(k))
                res[rule_name].append((j + 1, err))
            h = lanczos(op, dim, like, k=k, tol=tol, max_iter=120, seed=seed)
            res["heur"].append(h.hvps)
        med = {r: statistics.median(p for p, _ in res[r]) for r in ("old", "new")}
        worst = {r: max(e for _, e in res[r]) for r in ("old", "new")}
        print(
            f"{name:24s} {k:2d} {tol:6.0e} | {med['old']:13g} {worst['old']:9.1e} | {med['new']:13g} "
            f"{worst['new']:9.1e} | {med['new'] / med['old']:16.2f} | {statistics.median(res['heur']):g}"
        )


if __name__ == "__main__":
    main()
