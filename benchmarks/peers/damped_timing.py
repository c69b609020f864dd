"""Issue 16's time goal: the whole (m × n) score matrix on the damped problem, setsens against pyDVL's CG, at equal
accuracy, in one run. The set-up is `benchmarks/attribution.py` part B's (its --save file): MNIST logistic
regression 784×10 at w̄, n training and m test images, float64, one thread.

    .venv/bin/python benchmarks/attribution.py --parts b --n 1000 --ntest 500 --loo 100 --threads 1 --save /tmp/lr_1000.pt
    PYTHONPATH=. /work/peers-venv/bin/python benchmarks/peers/damped_timing.py /tmp/lr_1000.pt [--damping 1e-2] [--ntest 500] [--pydvl defaults,tight,block]

The damped problem: H = the Hessian of the plain mean cross-entropy + λI (pyDVL's `regularization=λ`; setsens'
`damping=λ`), up-weighting scores S = −∇ℓ_testᵀ H⁻¹ ∇ℓ_train for every (test, train) pair. The oracle is the dense
closed-form Hessian of part B (`lr_hessian`) and a Cholesky solve. Each contender is timed once (fit + scores, the
score matrix materialised); accuracy is ‖S − S_dense‖_F/‖S_dense‖_F (for pyDVL with its sign convention: the smaller of
the errors of ±S). pyDVL runs at its documented defaults (CG rtol 1e-4, atol 1e-6, one solve per test point), with
tight tolerances, and with its block CG (`solve_simultaneously=True`); setsens at its defaults.
"""
import argparse, importlib.util, pathlib, time
import torch
import torch.nn.functional as F
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location('attribution_bench', ROOT/'benchmarks'/'attribution.py')
bench = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(bench)


def model_at(w):
    m = nn.Linear(784, 10).double()
    with torch.no_grad(): m.weight.copy_(w[:7840].view(10, 784)); m.bias.copy_(w[7840:])
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('path')
    ap.add_argument('--damping', type=float, default=1e-2)
    ap.add_argument('--ntest', type=int, default=500)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--pydvl', default='defaults,tight,block',
                    help="pyDVL rows to run, comma-separated: defaults, tight (rtol 1e-10), block (block CG, rtol 1e-10)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = torch.load(a.path, weights_only=True)
    X, Y, Xt, Yt, w, lam = d['X'], d['Y'], d['Xt'][:a.ntest], d['Yt'][:a.ntest], d['w'], a.damping
    model = model_at(w)
    rows = lambda X_, Y_: torch.func.vmap(torch.func.grad(
        lambda w_, x, y: F.cross_entropy(x[None] @ w_[:7840].view(10, 784).T + w_[7840:], y[None])), (None, 0, 0))(w, X_, Y_)
    t0 = time.perf_counter()
    H = bench.lr_hessian(w, X, lam)                                   # mean-CE Hessian + λI, dense
    L = torch.linalg.cholesky(H)
    ref = -rows(Xt, Yt) @ torch.cholesky_solve(rows(X, Y).T, L)        # (m, n)
    t_ref = time.perf_counter() - t0
    err = lambda S: float(torch.linalg.matrix_norm(S - ref)/torch.linalg.matrix_norm(ref))
    print(f"\n### Damped score matrix, MNIST LR (n = {len(X)}, m = {len(Xt)}, λ = {lam:g}, p = {w.numel()}, float64, "
          f"{a.threads} thread(s))\n")
    print("| method | seconds | ‖S − S_dense‖/‖S_dense‖ | note |\n|---|---|---|---|", flush=True)
    out = []
    def row(name, sec, e, note):
        out.append((name, sec, e, note)); print(f"| {name} | {sec:.1f} | {e:.1e} | {note} |", flush=True)
    row('dense Cholesky (oracle)', t_ref, 0., '')

    from setsens.risk import Risk
    from setsens.attribution import influence_scores
    t0 = time.perf_counter()
    S, info = influence_scores(Risk(model, 'cross_entropy', X, Y), (Xt, Yt), kind='upweight', damping=lam, warn=False)
    row('setsens influence_scores (defaults)', time.perf_counter() - t0, err(S),
        f"{info.solve.method}, {info.solve.hvps} HVP columns, {info.solve.status}")

    from pydvl.influence.torch import CgInfluence
    from pydvl.influence import InfluenceMode
    configs = {'defaults': ('defaults: rtol 1e-4, atol 1e-6', {}), 'tight': ('rtol 1e-10, atol 0', dict(rtol=1e-10, atol=0.)),
               'block': ('block CG, rtol 1e-10, atol 0', dict(rtol=1e-10, atol=0., solve_simultaneously=True))}
    wanted = [c.strip() for c in a.pydvl.split(',') if c.strip()]
    if bad := [c for c in wanted if c not in configs]: raise SystemExit(f"--pydvl: unknown row(s) {bad}; choose from {list(configs)}")
    for label, kw in (configs[c] for c in wanted):
        t0 = time.perf_counter()
        m = CgInfluence(model, F.cross_entropy, regularization=lam, warn_on_max_iteration=False, **kw).fit(
            torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=len(X)))
        P = m.influences(Xt, Yt, X, Y, mode=InfluenceMode.Up)
        sec = time.perf_counter() - t0
        e = min((err(P), '+'), (err(-P), '−'))
        row(f"pyDVL CgInfluence ({label})", sec, e[0], f"sign {e[1]}")

    s = {n: (sec, e) for n, sec, e, _ in out}
    ours = s['setsens influence_scores (defaults)']
    for n_, (sec, e) in s.items():
        if n_.startswith('pyDVL'): print(f"\nsetsens time / {n_} time = {ours[0]/sec:.3f} (errors {ours[1]:.1e} vs {e:.1e})")


if __name__ == '__main__':
    main()
