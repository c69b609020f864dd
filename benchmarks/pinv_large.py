#!/usr/bin/env python
"""Where `pinv_solve` spends its time on a model of dattri's MLP size (issue 17: the Krylov bookkeeping at large p).

The model is dattri's MNIST MLP 784-128-64-10 (tanh, p = 109,386, float64) on the first n MNIST training images,
trained by a few L-BFGS rounds on mean cross-entropy + (μ/2)‖w‖²; the right-hand sides are the test-loss gradients of
k MNIST test images; the solve is (H + μI)⁻¹B (`damping=μ`: a strict minimiser is not needed to time the solve).
Every Hessian-vector product is timed (the risk's `hvp` is wrapped), so each row splits the wall time into products
and everything else (reorthogonalisation, Rayleigh–Ritz, the convergence checks): the bookkeeping.

With `--old-rev REV`, `setsens/pinv.py` of git revision REV runs too, on the same problem, interleaved with the
current one (medians over `--repeats`): the two rows per method are the change, measured in one run.

    python benchmarks/pinv_large.py [--n 200] [--k 8] [--methods block,lanczos] [--old-rev 0b10c12] [--repeats 2]
    python benchmarks/pinv_large.py --layout [--threads 1]     # the reorthogonalisation's products, row against column form
"""
from __future__ import annotations
import argparse, importlib.util, statistics, time, warnings
from pathlib import Path
import torch
import torch.nn.functional as F
from setsens.risk import Risk
import setsens.pinv as pinv_now


_spec = importlib.util.spec_from_file_location('attribution_mlp_bench', Path(__file__).resolve().parent/'attribution_mlp.py')
_mlp_bench = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(_mlp_bench)


def load_pinv_rev(rev):
    "setsens.pinv as of git revision `rev` (benchmarks/krylov.py's loader)."
    spec = importlib.util.spec_from_file_location('krylov_bench', Path(__file__).resolve().parent/'krylov.py')
    kb = importlib.util.module_from_spec(spec); spec.loader.exec_module(kb)
    return kb.load_module_rev(rev, 'pinv')


def problem(n, k, mu, lbfgs_iters, device='cpu'):
    "(risk at the L-BFGS end point, B (p, k) test-loss gradients, ‖∇R + μw‖), on `device`."
    net = _mlp_bench.mlp().to(device)                        # attribution_mlp.py's model and data (torch seed 0)
    X, Y, Xt, Yt = _mlp_bench.mnist(n, k, device)
    risk = Risk(net, F.cross_entropy, X, Y)
    w = risk.w.clone().requires_grad_()
    fn = lambda W, X_, Y_: F.cross_entropy(torch.func.functional_call(net, risk.unflatten(W), (X_,)), Y_)
    opt = torch.optim.LBFGS([w], max_iter=lbfgs_iters, history_size=50, line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = fn(w, X, Y) + 0.5*mu*w.pow(2).sum(); l.backward(); return l
    opt.step(closure)
    risk = risk.at(w=w.detach())
    B = torch.stack([torch.func.grad(fn)(risk.w, Xt[i:i + 1], Yt[i:i + 1]) for i in range(k)], 1)
    return risk, B, float((risk.grad() + mu*risk.w).norm())


def timed(mod, risk, B, mu, method, mem_gb, maxiter=None):
    "(wall s, seconds in HVPs, HVP columns, SolveInfo, X) of one solve."
    spent = [0.]
    plain = risk.hvp
    def hvp(V):
        t = time.perf_counter(); out = plain(V); spent[0] += time.perf_counter() - t; return out
    risk.hvp = hvp
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            X, info = mod.pinv_solve(risk, B, damping=mu, method=method, mem_budget=mem_gb*2**30, maxiter=maxiter)
        wall = time.perf_counter() - t0
    finally: del risk.hvp
    return wall, spent[0], info.hvps, info, X


def layout(p=109_386, steps=300, k=4, reps=5):
    """The reorthogonalisation's two products on a stored basis (k columns × steps × p, float64), in the forms the
    solves use now (row vectors against the rows of the basis) and the column forms they used before; medians."""
    g = torch.Generator().manual_seed(0)
    Qm = torch.randn(k, steps + 100, p, generator=g, dtype=torch.float64)[:, :steps]   # a view into a larger buffer, as in the solve
    W, c = torch.randn(k, p, generator=g, dtype=torch.float64), torch.randn(k, steps, generator=g, dtype=torch.float64)
    forms = {'projection Qᵀw: row form bmm(w, Qᵀ)': lambda: torch.bmm(W[:, None], Qm.mT),
             'projection Qᵀw: column form bmm(Q, w)': lambda: torch.bmm(Qm, W[:, :, None]),
             'update Q c: row form bmm(c, Q)': lambda: torch.bmm(c[:, None], Qm),
             'update Q c: column form bmm(Qᵀ, c)': lambda: torch.bmm(Qm.mT, c[:, :, None])}
    times = {name: [] for name in forms}
    for _ in range(reps):
        for name, f in forms.items():
            t = time.perf_counter(); f(); times[name].append(time.perf_counter() - t)
    print(f"\n| product (k = {k}, {steps} steps, p = {p:,}) | median s |\n|---|---|")
    for name, ts in times.items(): print(f"| {name} | {statistics.median(ts):.4f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=200, help='training images')
    ap.add_argument('--k', type=int, default=8, help='right-hand sides (test images)')
    ap.add_argument('--mu', type=float, default=1e-2, help='weight decay, and the damping of the solve')
    ap.add_argument('--lbfgs-iters', type=int, default=200)
    ap.add_argument('--methods', default='block,lanczos')
    ap.add_argument('--old-rev', default=None, help='also time setsens/pinv.py of this git revision, interleaved')
    ap.add_argument('--repeats', type=int, default=1)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--mem-gb', type=float, default=8.)
    ap.add_argument('--layout', action='store_true', help='only the two layouts of the reorthogonalisation products')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.layout: return layout()
    risk, B, gn = problem(a.n, a.k, a.mu, a.lbfgs_iters)
    mods = [('current', pinv_now)] + ([(a.old_rev, load_pinv_rev(a.old_rev))] if a.old_rev else [])
    print(f"MLP 784-128-64-10 (tanh), p = {risk.p:,}, n = {a.n}, k = {a.k} right-hand sides, damping μ = {a.mu:g}; "
          f"‖∇R + μw‖ = {gn:.1e} after {a.lbfgs_iters} L-BFGS iterations; {a.threads} threads, {a.repeats} repeat(s), medians\n", flush=True)
    res = {}
    for _ in range(a.repeats):
        for method in a.methods.split(','):
            for name, mod in mods:
                res.setdefault((method, name), []).append(timed(mod, risk, B, a.mu, method, a.mem_gb))
                w, h, nh, info, _ = res[(method, name)][-1]
                print(f"  {method} / {name}: {w:.1f} s, products {h:.1f} s, {nh} HVP columns, {info.status}", flush=True)
    print("\n| method | setsens | wall s | in HVPs s | bookkeeping s | HVP columns | status | max normres | ‖X − X_current‖/‖X_current‖ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (method, name), rs in res.items():
        wall, hv = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
        info, X = rs[-1][3], rs[-1][4]
        Xc = res[(method, 'current')][-1][4]
        d = float(torch.linalg.vector_norm(X - Xc)/torch.linalg.vector_norm(Xc))
        print(f"| {method} | {name} | {wall:.1f} | {hv:.1f} | {wall - hv:.1f} | {info.hvps} | {info.status} | "
              f"{float(info.normres.max()):.1e} | {d:.1e} |")


if __name__ == '__main__':
    main()
