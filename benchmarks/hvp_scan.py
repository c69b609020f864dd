"""Issue 14 §2: the NaN/Inf scan of V skipped inside solves. `risk.H @ V` (the operator a Krylov solve applies once per
iteration) against the committed `git show HEAD:setsens/risk.py`, whose operator scanned V on every product, and against
the public `risk.hvp(V)` (which still scans); interleaved in one process, medians of CPU time. The products and a fixed-
iteration MINRES solve must be bit-identical old vs new.

    OMP_NUM_THREADS=1 python benchmarks/hvp_scan.py [--n 32] [--width 16] [--k 1] [--reps 200] [--iters 30]
"""
import argparse, statistics, sys, time, warnings
from pathlib import Path
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT/'benchmarks'))
import setsens.risk as new
from setsens.krylov import minres
from risk_checks import head_module


def cpu(f, reps):
    "Median CPU seconds of `f()` over `reps` calls, and its last output."
    ts = []
    for _ in range(reps):
        c = time.process_time(); out = f(); ts.append(time.process_time() - c)
    return statistics.median(ts), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=32); ap.add_argument('--width', type=int, default=16)
    ap.add_argument('--k', type=int, default=1); ap.add_argument('--reps', type=int, default=200)
    ap.add_argument('--iters', type=int, default=30)
    a = ap.parse_args()
    torch.set_num_threads(1)
    old = head_module()
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(4, a.width), nn.Tanh(), nn.Linear(a.width, 1)).double()
    X, Y = torch.randn(a.n, 4, generator=g, dtype=torch.float64), torch.randn(a.n, 1, generator=g, dtype=torch.float64)
    risks = {k: m.Risk(net, 'mse', X, Y) for k, m in (('old', old), ('new', new))}
    p = risks['new'].p
    V = torch.randn(p, a.k, generator=g, dtype=torch.float64)[:, 0] if a.k == 1 else torch.randn(p, a.k, generator=g, dtype=torch.float64)
    print(f"# MLP 4-{a.width}-1 tanh, mse, n={a.n}, p={p}, k={a.k}, cpu float64, torch {torch.__version__}, 1 thread; "
          f"old = git HEAD setsens/risk.py, new = working tree; medians of {a.reps} interleaved CPU times")
    res, outs = {}, {}
    for _ in range(3):   # interleaved rounds
        for name, f in (('old H @ V', lambda: risks['old'].H @ V), ('new H @ V', lambda: risks['new'].H @ V),
                        ('new hvp(V)', lambda: risks['new'].hvp(V))):
            t, outs[name] = cpu(f, a.reps); res.setdefault(name, []).append(t)
    same = torch.equal(outs['old H @ V'], outs['new H @ V']) and torch.equal(outs['new H @ V'], outs['new hvp(V)'])
    b = risks['new'].grad()
    warnings.filterwarnings('ignore', message='minres: ')   # rtol=0: a fixed number of iterations, 'not converged' by design
    solve = lambda r: minres(lambda v: r.H @ v, -b, rtol=0., maxiter=a.iters)   # the same (callable) path for both
    (t_old, (x_old, i_old)), (t_new, (x_new, i_new)) = cpu(lambda: solve(risks['old']), 5), cpu(lambda: solve(risks['new']), 5)
    print(f"products bit-identical (old H@V, new H@V, new hvp): {same}; MINRES {a.iters} iterations bit-identical: "
          f"{torch.equal(x_old, x_new)} ({i_old.iterations} vs {i_new.iterations} iterations)")
    print('| what | CPU s (median) | / old H @ V |')
    print('|---|---|---|')
    base = statistics.median(res['old H @ V'])
    from setsens.core import check_tensor
    t_scan, _ = cpu(lambda: check_tensor(V, 'V'), a.reps*10)
    print(f"| check_tensor(V) alone (the skipped scan) | {t_scan:.2e} | {t_scan/base:.3f} |")
    for name, ts in res.items(): print(f"| {name} | {statistics.median(ts):.2e} | {statistics.median(ts)/base:.3f} |")
    print(f"| MINRES {a.iters} it., old operator | {t_old:.2e} | |")
    print(f"| MINRES {a.iters} it., new operator | {t_new:.2e} | {t_new/t_old:.3f} (of the old solve) |")
    assert same and torch.equal(x_old, x_new), 'results differ'


if __name__ == '__main__':
    main()
