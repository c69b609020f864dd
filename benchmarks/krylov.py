#!/usr/bin/env python
"""Krylov solvers of `setsens.krylov` against each other and against curvlinops, in one run.

Three measurements, each solving A x = -b to the least-squares tolerance ‖A(Ax + b)‖ ≤ 1e-4 ‖Ab‖
(the normal residual of issue 3), contenders interleaved and repeated, wall times as medians:

1. An explicit symmetric matrix with a Hessian-like spectrum (10 outliers in [1, 100], a signed bulk
   with |λ| log-uniform in [1e-6, 1e-1], the rest zero), float64: products with A (HVPs) and wall
   time for minres, cgls, lsqr, and curvlinops' `LSMRInverseLinearOperator` on the same operator.
2. The real ResNet-56 Hessian system: pretrained weights and 128 CIFAR-10 images from
   ../shared/data, b = J ΔX with ΔX along the normalised input gradients of 4 images. The Hessian is
   taken with respect to the parameters of the last residual block and the classifier (p = 74 634):
   a full-network HVP costs 30-80 s on this shared 2-core CPU, so full-parameter solves of hundreds
   of HVPs do not fit; the block is a genuine principal sub-matrix of the ResNet-56 Hessian
   (activations entering the block are cached; the network is in eval mode; b itself is computed
   through the whole network). float32 and float64.
3. k = 16 right-hand sides in one batched solve against 16 sequential solves (both problems).

curvlinops' LSMR has its own stopping rules; to find the iterations it needs for *our* tolerance we
run it with atol = btol = conlim = 0 and bisect on maxiter, checking the true normal residual of each
result; the wall time quoted is that of the smallest maxiter that reaches the tolerance (its search
is not charged to it). LSMR applies A and Aᵀ once each per iteration: 2 HVPs per iteration.

4. Per-iteration overhead against SciPy's MINRES (issue 17): a singular PSD system, N = 2000, rank 1000,
   eigenvalues log-spaced in [1e-3, 1e2], a generic (inconsistent) b, float64, one thread. setsens `minres`
   runs to its default tolerance; SciPy's `minres` is then given the same number of products (maxiter set
   so that its counted matvecs equal setsens' `info.matvecs`, rtol = 0). Interleaved repetitions, medians,
   three ways: (a) each with its own dense product (torch `A @ x` through MKL against NumPy's `A @ x`
   through OpenBLAS: this includes the BLAS difference); (b) both calling the same torch product (SciPy
   through `torch.from_numpy`): the bookkeeping alone; (c) a cheap diagonal product for both. The
   overhead column is (wall − the same number of products alone)/products, in µs; a row per case gives
   the products alone (torch / SciPy's). (d) k = 4, 16 right-hand sides batched against a loop, equal work. With `--old-rev REV` the setsens of git revision REV runs too
   (`git show REV:setsens/krylov.py`, imported by path), side by side.

    python benchmarks/krylov.py [--quick] [--repeats 3] [--skip-resnet] [--threads 2]
    python benchmarks/krylov.py --scipy-only [--old-rev HEAD] [--repeats 5]
"""
from __future__ import annotations
import argparse, math, os, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')   # SciPy's BLAS on one thread too (set before NumPy loads)
import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vmap

from setsens.krylov import minres, lsqr, cgls

TOL = 1e-4


# ----------------------------------------------------------------------------- problems
def hessian_like(p=1500, n_out=10, n_bulk=400, neg=0.2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    lam = torch.zeros(p, dtype=torch.float64)
    lam[:n_out] = torch.logspace(0, 2, n_out, dtype=torch.float64)
    mag = 10**(-6 + 5*torch.rand(n_bulk, generator=g, dtype=torch.float64))
    lam[n_out:n_out + n_bulk] = mag*torch.where(torch.rand(n_bulk, generator=g) < neg, -1., 1.).double()
    A = (Q*lam) @ Q.T
    return ((A + A.T)/2).to(dtype)


class Problem:
    "A symmetric operator `A` (callable on (p,) and (p, k)), right-hand sides `b` (p,) and `B` (p, 16), a curvlinops operator."
    def __init__(self, name, A, b, B, curv, dtype):
        self.name, self.A, self.b, self.B, self.curv, self.dtype = name, A, b, B, curv, dtype

    def normal_residual(self, x, b):
        "‖A(Ax + b)‖/‖Ab‖ per column (true, two products)."
        return (self.A(self.A(x) + b).norm(dim=0)/self.A(b).norm(dim=0))


def dense_problem(p, dtype):
    M = hessian_like(p, n_bulk=int(0.27*p), dtype=dtype)
    b = torch.randn(p, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    B = torch.randn(p, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    try: from curvlinops._torch_base import PyTorchLinearOperator
    except ImportError:                               # curvlinops is optional (pip install -e ".[bench]")
        print('# curvlinops is not installed: its rows are skipped', file=sys.stderr, flush=True)
        return Problem(f'Hessian-like matrix p={p} {str(dtype)[6:]}', lambda V: M @ V, b, B, None, dtype)
    class Dense(PyTorchLinearOperator):
        def __init__(self): super().__init__([(p,)], [(p,)])
        def _matmat(self, X): return [M @ X[0]]
        def _adjoint(self): return self
        @property
        def device(self): return M.device
        @property
        def dtype(self): return M.dtype
    return Problem(f'Hessian-like matrix p={p} {str(dtype)[6:]}', lambda V: M @ V, b, B, Dense(), dtype)


def resnet_problem(dtype, n_images=128, n_perturbed=4):
    "The ResNet-56 Hessian w.r.t. the last block + classifier, on cached activations; b = J ΔX (full network)."
    from setsens.cifar import load_pretrained, cifar10
    from curvlinops import HessianLinearOperator
    model = load_pretrained(dtype=dtype).eval()
    X, Y = cifar10(n=n_images, dtype=dtype)
    head = torch.nn.Sequential()
    class Head(torch.nn.Module):                      # the last residual block, pooling and the classifier
        def __init__(self, m):
            super().__init__(); self.block, self.linear = m.layer3[-1], m.linear
        def forward(self, z): return self.linear(self.block(z).mean((2, 3)))
    class Front(torch.nn.Module):                     # everything before the last block (frozen)
        def __init__(self, m): super().__init__(); self.m = m
        def forward(self, x):
            m = self.m
            out = F.relu(m.bn1(m.conv1(x)))
            out = m.layer2(m.layer1(out))
            for blk in list(m.layer3)[:-1]: out = blk(out)
            return out
    head, front = Head(model).eval(), Front(model).eval()
    names = [n for n, _ in head.named_parameters()]
    w0 = {n: p.detach() for n, p in head.named_parameters()}
    buffers = dict(head.named_buffers())
    shapes = [w0[n].shape for n in names]; sizes = [w0[n].numel() for n in names]
    flat = lambda d: torch.cat([d[n].reshape(-1) for n in names])
    def unflat(v): return {n: t.reshape(s) for n, t, s in zip(names, v.split(sizes), shapes)}
    w = flat(w0)
    with torch.no_grad(): Z = front(X)
    def risk(v, z): return F.cross_entropy(functional_call(head, (unflat(v), buffers), (z,)), Y)
    g = grad(risk)                                    # ∇_w R(w, z)
    hvp1 = lambda v: jvp(lambda u: g(u, Z), (w,), (v,))[1]     # forward-over-reverse HVP
    hvpk = vmap(hvp1, in_dims=1, out_dims=1)
    A = lambda V: hvp1(V) if V.ndim == 1 else hvpk(V)
    # b = J ΔX = d/dt ∇_w R(w, X + tΔX), ΔX along the normalised input gradients of chosen images.
    # An image's row of ΔX only moves its own term (1/n) l_i of the mean (eval-mode BatchNorm), so
    # each image's contribution is one single-image forward-over-reverse product.
    Xg = X.clone().requires_grad_(True)
    gx, = torch.autograd.grad(F.cross_entropy(model(Xg), Y, reduction='sum'), Xg)
    def jx_image(i):                                  # J ΔX for ΔX = e_i ⊗ (∇_x l_i/‖∇_x l_i‖)
        d = gx[i:i+1]/gx[i].norm()
        gi = lambda x: grad(lambda v: F.cross_entropy(functional_call(head, (unflat(v), buffers), (front(x),)),
                                                      Y[i:i+1], reduction='sum')/len(X))(w)
        return jvp(gi, (X[i:i+1],), (d,))[1].detach()
    cols = [jx_image(i) for i in range(16)]
    b = sum(cols[:n_perturbed])
    B = torch.stack(cols, 1)
    curv = HessianLinearOperator(head, torch.nn.CrossEntropyLoss(), list(head.parameters()), [(Z, Y)],
                                 check_deterministic=False)
    return Problem(f'ResNet-56 Hessian (last block + fc, p={w.numel()}) {str(dtype)[6:]}', A, b, B, curv, dtype)


# ----------------------------------------------------------------------------- contenders
def ours(solver, prob, b, maxiter):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        x, info = solver(prob.A, -b, rtol=TOL, maxiter=maxiter)
    return time.perf_counter() - t, x, info.matvecs, bool(info.converged.all()) if info.converged.ndim else bool(info.converged)


def curvlinops_lsmr(prob, b, iters):
    from curvlinops import LSMRInverseLinearOperator
    inv = LSMRInverseLinearOperator(prob.curv, atol=0., btol=0., conlim=0., maxiter=iters)
    t = time.perf_counter()
    x = inv @ (-b)
    return time.perf_counter() - t, x.to(b.dtype)


def lsmr_iterations_to_tol(prob, b, cap):
    "Smallest maxiter (within 10%) for which curvlinops' LSMR meets the tolerance; None if not within `cap`."
    ok = lambda n: bool(prob.normal_residual(curvlinops_lsmr(prob, b, n)[1], b) <= TOL)
    n = 16
    while not ok(n):
        if n >= cap: return None
        n = min(2*n, cap)
    lo, hi = n//2, n
    while hi - lo > max(1, hi//10):
        mid = (lo + hi)//2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def median(v): return statistics.median(v) if v else float('nan')


# ----------------------------------------------------------------------------- main
def run(prob, repeats, maxiter, rows, batch=True):
    b = prob.b
    # (1)/(2) single right-hand side: minres, cgls, lsqr, curvlinops LSMR (interleaved repeats)
    n_lsmr = lsmr_iterations_to_tol(prob, b, cap=maxiter) if prob.curv is not None else None
    times = {k: [] for k in ('minres', 'cgls', 'lsqr', 'curvlinops LSMR')}
    res = {}
    for r in range(repeats):
        for name, solver in (('minres', minres), ('cgls', cgls), ('lsqr', lsqr)):
            t, x, mv, conv = ours(solver, prob, b, maxiter)
            times[name].append(t); res[name] = (mv, conv, float(prob.normal_residual(x, b)))
        if n_lsmr is not None:
            t, x = curvlinops_lsmr(prob, b, n_lsmr)
            times['curvlinops LSMR'].append(t)
            res['curvlinops LSMR'] = (2*n_lsmr, True, float(prob.normal_residual(x, b)))
    if n_lsmr is None: res['curvlinops LSMR'] = (None, False, float('nan'))
    base_mv, base_t = res['cgls'][0], median(times['curvlinops LSMR'])
    for name in times:
        mv, conv, nr = res[name]
        rows.append((prob.name, name, mv, (mv/base_mv) if mv else None, conv, nr, median(times[name]),
                     median(times[name])/base_t if base_t == base_t else None))
    # (3) 16 right-hand sides: batched vs sequential (interleaved repeats)
    if batch:
        tb, ts = [], []
        for r in range(repeats):
            t, xb, mvb, convb = ours(minres, prob, prob.B, maxiter); tb.append(t)
            t0 = time.perf_counter(); mvs = 0
            for j in range(prob.B.shape[1]):
                _, _, mv, _ = ours(minres, prob, prob.B[:, j], maxiter); mvs += mv
            ts.append(time.perf_counter() - t0)
        rows.append((prob.name, 'minres, 16 rhs batched', mvb, None, convb, float(prob.normal_residual(xb, prob.B).max()),
                     median(tb), None))
        rows.append((prob.name, 'minres, 16 rhs one by one', mvs, None, True, float('nan'), median(ts), None))
        rows.append((prob.name, '  batched / sequential time', None, None, None, float('nan'), median(tb)/median(ts), None))


def run_capped(prob, maxiter, rows, batch_iters=10, solvers=('cgls', 'curvlinops LSMR', 'lsqr')):
    """For an expensive operator: one run each. minres to the tolerance (N products); the others get a
    budget of 2.05 N products, which decides the goal "minres ≤ 0.5× their products" either way."""
    b = prob.b
    t, x, n_min, conv = ours(minres, prob, b, maxiter)
    rows.append((prob.name, 'minres', n_min, None, conv, float(prob.normal_residual(x, b)), t, None))
    print(f'#   minres: {n_min} products, {t:.0f} s', file=sys.stderr, flush=True)
    cap = math.ceil(2.05*n_min)//2                   # iterations of the two-product methods
    t_lsmr = None
    for name in solvers:
        if name == 'curvlinops LSMR':
            t, x = curvlinops_lsmr(prob, b, cap); mv = 2*cap; t_lsmr = t
            nr = float(prob.normal_residual(x, b)); conv = nr <= TOL
        else:
            t, x, mv, conv = ours({'cgls': cgls, 'lsqr': lsqr}[name], prob, b, cap)
            nr = float(prob.normal_residual(x, b))
        rows.append((prob.name, f'{name} (budget {2*cap} products)', mv, None, conv, nr, t, None))
        print(f'#   {name}: {mv} products, {t:.0f} s, reached {nr:.2e}', file=sys.stderr, flush=True)
        print(table(rows), file=sys.stderr, flush=True)
    if t_lsmr is not None:
        i = next(i for i in range(len(rows) - 1, -1, -1) if rows[i][1] == 'minres' and rows[i][0] == prob.name)
        rows[i] = rows[i][:7] + (rows[i][6]/t_lsmr,)
    if batch_iters:                                  # equal work per column: a fixed number of iterations
        B = prob.B
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            t0 = time.perf_counter(); minres(prob.A, -B, rtol=0., maxiter=batch_iters); tb = time.perf_counter() - t0
            t0 = time.perf_counter()
            for j in range(B.shape[1]): minres(prob.A, -B[:, j], rtol=0., maxiter=batch_iters)
            ts = time.perf_counter() - t0
        rows.append((prob.name, f'minres, 16 rhs batched, {batch_iters} iterations', None, None, None, float('nan'), tb, None))
        rows.append((prob.name, f'minres, 16 rhs one by one, {batch_iters} iterations each', None, None, None, float('nan'), ts, None))
        rows.append((prob.name, '  batched / sequential time', None, None, None, float('nan'), tb/ts, None))


def table(rows):
    out = ['| problem | solver | HVPs | HVPs / cgls | converged | ‖A(Ax+b)‖/‖Ab‖ | wall [s] (median) | wall / curvlinops LSMR |',
           '|---|---|---|---|---|---|---|---|']
    f = lambda v, fmt: '–' if v is None or (isinstance(v, float) and v != v) else format(v, fmt)
    for p, s, mv, r, c, nr, t, tr in rows:
        out.append(f'| {p} | {s} | {f(mv, "d")} | {f(r, ".2f")} | {"" if c is None else ("yes" if c else "no")} | '
                   f'{f(nr, ".1e")} | {f(t, ".3g")} | {f(tr, ".2f")} |')
    return '\n'.join(out)


# ----------------------------------------------------------------------------- against SciPy (issue 17)
def singular_psd(N=2000, rank=1000, seed=0):
    "A = Q diag(λ) Qᵀ, λ log-spaced in [1e-3, 1e2] on `rank` directions, 0 on the rest; a generic b (inconsistent)."
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    lam = torch.zeros(N, dtype=torch.float64); lam[:rank] = torch.logspace(-3, 2, rank, dtype=torch.float64)
    A = (Q*lam) @ Q.T
    return ((A + A.T)/2).contiguous(), torch.randn(N, generator=g, dtype=torch.float64)


def load_module_rev(rev, module='krylov'):
    """setsens.<module> as of git revision `rev`, imported by path from a temporary file; its relative imports resolve
    to today's setsens (next to nothing else changes). Also used by benchmarks/pinv_large.py."""
    import importlib.util
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(['git', 'show', f'{rev}:setsens/{module}.py'], cwd=root, capture_output=True, text=True, check=True).stdout
    f = Path(tempfile.mkdtemp())/f'{module}_old.py'; f.write_text(src)
    name = f'setsens._{module}_' + ''.join(c for c in rev if c.isalnum())
    spec = importlib.util.spec_from_file_location(name, f)
    m = importlib.util.module_from_spec(spec); m.__package__ = 'setsens'; sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


def load_krylov_rev(rev): return load_module_rev(rev, 'krylov')


def scipy_overhead(repeats=5, N=2000, old=None, rows=None):
    """setsens minres against SciPy's MINRES at equal products on the singular N = 2000 system: wall ratios (a) native
    products, (b) the same torch product, (c) per-iteration overhead (µs) with a diagonal product. Prints a table."""
    import scipy.sparse.linalg as sla
    A, b = singular_psd(N)
    An, bn = A.numpy(), b.numpy()
    d = torch.linspace(1e-3, 1e2, N, dtype=torch.float64); d[N//2:] = 0      # the diagonal analogue (singular PSD)
    dn = d.numpy()
    ops = {'(a) native dense product': (A, lambda v: An @ v),
           '(b) the same torch product': (lambda V: A @ V, lambda v: (A @ torch.from_numpy(v)).numpy()),
           '(c) diagonal product (overhead only)': (lambda V: d[:, None]*V if V.ndim == 2 else d*V, lambda v: dn*v)}
    contenders = {'setsens': minres} | ({f'setsens {old[0]}': old[1].minres} if old else {})
    out = []
    for label, (top, npop) in ops.items():
        _, info = minres(top, b, warn=False)
        mvs = info.matvecs
        cnt = [0]
        def mv(v): cnt[0] += 1; return npop(v)
        L = sla.LinearOperator((N, N), matvec=mv, rmatvec=mv, dtype=np.float64)
        cnt[0] = 0; sla.minres(L, bn, rtol=0., maxiter=mvs); extra = cnt[0] - mvs   # SciPy's products beyond maxiter
        def scipy_run():
            cnt[0] = 0; t = time.perf_counter(); sla.minres(L, bn, rtol=0., maxiter=mvs - extra)
            dt = time.perf_counter() - t; assert cnt[0] == mvs, (cnt[0], mvs); return dt
        def ours_run(f):
            t = time.perf_counter(); _, inf = f(top, b, warn=False); dt = time.perf_counter() - t
            assert inf.matvecs == mvs; return dt
        times = {n: [] for n in ['SciPy'] + list(contenders)}
        V1, tp = b[:, None], {'torch': [], 'NumPy': []}              # the products alone, as each solver calls them
        for r in range(repeats):                       # interleaved: solves and the products alone
            times['SciPy'].append(scipy_run())
            for n, f in contenders.items(): times[n].append(ours_run(f))
            t0 = time.perf_counter()
            for _ in range(mvs): top(V1) if callable(top) else top @ V1
            tp['torch'].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(mvs): npop(bn)
            tp['NumPy'].append(time.perf_counter() - t0)
        med = {n: median(t) for n, t in times.items()}
        out.append((label, f'{mvs} products alone: torch / SciPy\'s', mvs, None, median(tp['torch']),
                    median(tp['torch'])/median(tp['NumPy']), None))
        for n in times:                                # overhead: wall minus the products alone, per product
            per_it = (med[n] - median(tp['NumPy' if n == 'SciPy' else 'torch']))/mvs*1e6
            out.append((label, n, mvs, info.iterations if n != 'SciPy' else mvs - 1, med[n], med[n]/med['SciPy'], per_it))
        out.append(out.pop(-len(times) - 1))          # the products-alone row after the solvers
        print(f'#   {label} done', file=sys.stderr, flush=True)
    for k in (4, 16):                                  # batched vs looped, equal work: a fixed number of iterations
        Bk = torch.randn(N, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        def batched(): t = time.perf_counter(); minres(A, Bk, rtol=0., maxiter=100, warn=False); return time.perf_counter() - t
        def looped():
            t = time.perf_counter()
            for j in range(k): minres(A, Bk[:, j], rtol=0., maxiter=100, warn=False)
            return time.perf_counter() - t
        tb, tl = [], []
        for r in range(repeats): tb.append(batched()); tl.append(looped())
        out.append((f'(d) {k} right-hand sides, 100 iterations each', 'setsens batched / looped', None, 100, median(tb),
                    median(tb)/median(tl), None))
    lines = [f'minres vs SciPy MINRES at equal products (N = {N}, singular PSD, rank {N//2}, float64, '
             f'{torch.get_num_threads()} torch thread(s), OPENBLAS_NUM_THREADS={os.environ.get("OPENBLAS_NUM_THREADS")}, '
             f'{repeats} interleaved repeats, medians)', '',
             '| product | solver | products | iterations | wall [s] | wall / SciPy (d: / looped) | overhead per product [µs] |', '|---|---|---|---|---|---|---|']
    for lab, n, mvs, its, t, r, o in out:
        lines.append(f'| {lab} | {n} | {"–" if mvs is None else mvs} | {"–" if its is None else its} | {t:.3f} | {r:.2f} | '
                     f'{"–" if o is None else f"{o:.0f}"} |')
    print('\n'.join(lines), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='small sizes, one repeat, no ResNet')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1: the machine is shared; 2 threads oversubscribe it)')
    ap.add_argument('--skip-resnet', action='store_true')
    ap.add_argument('--resnet-dtypes', default='float64',
                    help='float32 is not useful at 1e-4: its HVPs and b carry relative errors of 1e-4 and 7e-2')
    ap.add_argument('--resnet-only', action='store_true')
    ap.add_argument('--batch-iters', type=int, default=10, help='fixed iterations for the ResNet batched-vs-loop timing')
    ap.add_argument('--scipy-only', action='store_true', help='only the comparison with SciPy MINRES (issue 17)')
    ap.add_argument('--no-scipy', action='store_true', help='skip the comparison with SciPy MINRES')
    ap.add_argument('--old-rev', default=None, help='also time setsens.krylov of this git revision against SciPy')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not a.no_scipy:
        old = (a.old_rev, load_krylov_rev(a.old_rev)) if a.old_rev else None
        scipy_overhead(max(a.repeats, 5) if not a.quick else 3, N=2000, old=old)
        if a.scipy_only: return
    repeats = 1 if a.quick else a.repeats
    rows = []
    t0 = time.time()
    if not a.resnet_only:
        prob = dense_problem(400 if a.quick else 1500, torch.float64)
        run(prob, repeats, 4000, rows)
        print(f'# {prob.name} done after {time.time() - t0:.0f} s', file=sys.stderr, flush=True)
        print(table(rows), file=sys.stderr, flush=True)
    if not (a.quick or a.skip_resnet):
        for dt in a.resnet_dtypes.split(','):
            prob = resnet_problem(getattr(torch, dt))
            print(f'# {prob.name}: set up after {time.time() - t0:.0f} s', file=sys.stderr, flush=True)
            run_capped(prob, 3000, rows, batch_iters=a.batch_iters)
            print(f'# done after {time.time() - t0:.0f} s', file=sys.stderr, flush=True)
            print(table(rows), file=sys.stderr, flush=True)
    print(f'Krylov solvers to ‖A(Ax+b)‖ ≤ {TOL:g}‖Ab‖ (solving Ax = −b); torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, {repeats} interleaved repeats, medians')
    print(table(rows))


if __name__ == '__main__':
    main()
