"""Determinism (issue 8 §3): the same seed gives bitwise-identical results (`torch.equal`) on the CPU.

What is deterministic, and what these tests check
-------------------------------------------------
* On the CPU, with a fixed thread count and the same torch build, every setsens computation is a
  fixed sequence of floating-point operations, so a repeated call returns the same bits:
  - the toy study's numbers (`setsens.toy.toy_study`, `toy_analysis`), including Algorithm 1's
    random samples, which come from a `torch.Generator` seeded by `seed`;
  - the matrix-free solution-set samples (`setsens.graphical.estimate_solution_set`): the random
    starts x0 are drawn from `torch.Generator().manual_seed(seed)` on the CPU and then moved to the
    risk's device, so the starts are the same on every device for a seed;
  - the AIF (`setsens.aif.aif`) and `Risk` products (`hvp`, `jx`, `jxT`, `grad`);
  - the set distances (`setsens.sets`), whose block order comes from a private generator with a fixed seed.
* None of these reads or advances the *global* torch RNG, so results do not depend on what ran
  before, and a fresh process gives the same bits as a warm one (checked in a subprocess).
* Different seeds give different samples of the same set: for `estimate_solution_set` they differ
  only in ker H (their range-H parts are the minimum-norm shift, up to the solver tolerance).

What is *not* deterministic (not tested here; documented for users)
-------------------------------------------------------------------
* Bits may change with the number of CPU threads (`torch.set_num_threads`), the BLAS/oneDNN build,
  the CPU instruction set (AVX2 vs AVX-512 kernels sum in different orders) and the torch version.
* `Risk(..., batch_size=b)` chunks a sum over the data: another `b` changes the summation order, so
  results agree to rounding (see `test_risk.py::test_chunking_invariance`), not bitwise; the same for
  one (p, k) block versus k separate right-hand sides (vmap versus a loop).
* On GPUs, cuDNN convolution backward and cuBLAS split-K reductions may pick non-deterministic
  algorithms and `index_add_`/`scatter_add_` use atomics whose order varies, so the ResNet HVPs and
  everything downstream (solves, AIF) can differ in the last bits between runs. Set
  `torch.use_deterministic_algorithms(True)`, `torch.backends.cudnn.benchmark = False` and
  `CUBLAS_WORKSPACE_CONFIG=:4096:8` for bitwise-repeatable GPU runs, at some cost in speed.
  (`scatter_reduce_(..., 'amin')` in the distance kernels is order-independent, hence repeatable.)
* `AffineSet.sample(..., generator=None)` draws from the global RNG by design: pass a generator.
"""
import json, math, os, subprocess, sys, textwrap
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import nn

f64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def same(a, b):
    "Bitwise equality of two tensors (so NaN == NaN and -0. != 0.)."
    raw = lambda t: t.detach().contiguous().reshape(-1).view(torch.uint8)
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))


class global_rng_untouched:
    "Seed the global RNG with `seed`, run the block, and assert the block did not advance it."
    def __init__(self, seed): self.seed = seed
    def __enter__(self):
        torch.manual_seed(self.seed)
        self.state = torch.get_rng_state()
    def __exit__(self, *exc):
        if exc[0] is None: assert torch.equal(torch.get_rng_state(), self.state), 'the global torch RNG was used'


# ---------------------------------------------------------------- the toy (paper 1, eq. 16)

def test_toy_study_numbers_bitwise():
    from setsens.toy_study import toy_study
    with global_rng_untouched(1): a = toy_study()
    with global_rng_untouched(2): b = toy_study()
    assert [r.quantity for r in a] == [r.quantity for r in b]
    for ra, rb in zip(a, b):
        assert same(torch.tensor(float(ra.ours), dtype=f64), torch.tensor(float(rb.ours), dtype=f64)), ra.quantity
        assert ra.note == rb.note


def test_toy_samples_seeded():
    from setsens.toy_study import toy_analysis
    with global_rng_untouched(3): a = toy_analysis(seed=0)
    with global_rng_untouched(4): b = toy_analysis(seed=0)
    c = toy_analysis(seed=1)
    sa, sb, sc = a['stability'].samples, b['stability'].samples, c['stability'].samples
    assert same(sa, sb) and same(a['w_if'], b['w_if']) and same(a['risk_samples'], b['risk_samples'])
    assert not torch.equal(sa, sc)
    # another seed: other points of the same estimated set (a line), in the same ball
    S = a['stability'].estimate
    assert float(S.distance(sc).max()) <= 1e-12
    assert float(torch.linalg.vector_norm(sc - torch.tensor([1., 2.], dtype=f64), dim=1).max()) <= 0.2 + 1e-12


# ---------------------------------------------------------------- matrix-free solution-set samples

@lru_cache(None)
def twin(noise=0.):
    """A 2-4-1 tanh net whose last two hidden units are twins, labelled by itself (so w̄ is a minimiser;
    with `noise`, labels + noise·N(0, 1), so ∇_x l ≠ 0): H is singular with a known kernel.
    Returns the Risk and its dense Hessian (float64, by autograd)."""
    from setsens.risk import Risk
    from torch.func import functional_call
    g = torch.Generator().manual_seed(7)
    W0 = torch.randn(3, 2, generator=g, dtype=f64)
    net = nn.Sequential(nn.Linear(2, 4, bias=False), nn.Tanh(), nn.Linear(4, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.cat([W0, W0[-1:]]))
        net[2].weight.copy_(torch.tensor([[0.8, -0.6, 0.5, 0.7]], dtype=f64))
    X = torch.randn(6, 2, generator=g, dtype=f64)
    with torch.no_grad(): Y = net(X) + noise * torch.randn(6, 1, generator=g, dtype=f64)
    risk = Risk(net, 'mse', X, Y)
    def R(w): return (0.5 * (functional_call(net, risk.unflatten(w), (X,)) - Y) ** 2).sum(1).mean()
    H = torch.autograd.functional.hessian(R, risk.w)
    return risk, H


DX_K = torch.tensor([[0.3, -0.2], [-0.1, 0.4]], dtype=f64)
K = [1, 4]


def test_estimate_solution_set_same_seed_bitwise():
    from setsens.graphical import estimate_solution_set
    risk, _ = twin()
    with global_rng_untouched(5): a, ia = estimate_solution_set(risk, DX_K, n=4, seed=11, idx=K, rtol=1e-12, maxiter=500)
    with global_rng_untouched(6): b, ib = estimate_solution_set(risk, DX_K, n=4, seed=11, idx=K, rtol=1e-12, maxiter=500)
    assert same(a, b)
    assert [i.iterations for i in ia] == [i.iterations for i in ib]
    assert all(same(x.resnorm, y.resnorm) and same(x.normres, y.normres) for x, y in zip(ia, ib))


def test_estimate_solution_set_seeds_differ_in_ker_H_only():
    from setsens.graphical import estimate_solution_set
    risk, H = twin()
    a, ia = estimate_solution_set(risk, DX_K, n=4, seed=11, idx=K, rtol=1e-12, maxiter=500)
    b, ib = estimate_solution_set(risk, DX_K, n=4, seed=12, idx=K, rtol=1e-12, maxiter=500)
    assert all(bool(i.converged) for i in ia + ib)
    D = (a - b).T                                          # (p, 4)
    assert float(D.norm(dim=0).min()) > 1e-3               # the samples really differ ...
    scale = float(H.abs().max()) * float(D.norm(dim=0).max())
    assert float((H @ D).abs().max()) <= 1e-8 * scale      # ... only along ker H
    P = torch.linalg.pinv(H, hermitian=True) @ H           # projector onto range H: same range part
    torch.testing.assert_close(P @ (a - risk.w).T, P @ (b - risk.w).T, rtol=0, atol=1e-8)


def test_risk_products_bitwise():
    risk, _ = twin()
    g = torch.Generator().manual_seed(0)
    V = torch.randn(risk.p, 3, generator=g, dtype=f64)
    dX = torch.randn(*risk.X.shape, 2, generator=g, dtype=f64)
    for f, arg in ((risk.hvp, V), (risk.hvp, V[:, 0]), (risk.jx, dX), (risk.jxT, V)):
        assert same(f(arg), f(arg))
    assert same(risk.grad(), risk.grad()) and same(risk.value(), risk.value())


def test_set_distances_bitwise():
    from setsens.sets import hausdorff, excess
    g = torch.Generator().manual_seed(0)
    C, D = torch.randn(300, 40, generator=g), torch.randn(200, 40, generator=g)   # float32: screened path
    with global_rng_untouched(7): a = (hausdorff(C, D), excess(C, D, chunk_size=17))
    with global_rng_untouched(8): b = (hausdorff(C, D), excess(C, D, chunk_size=17))
    assert all(same(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- a fresh process gives the same bits

_CHILD = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from test_determinism import twin, DX_K, K
    from setsens.toy_study import toy_analysis
    from setsens.graphical import estimate_solution_set
    risk, _ = twin()
    pts, _ = estimate_solution_set(risk, DX_K, n=3, seed=11, idx=K, rtol=1e-12, maxiter=500)
    torch.save({'toy': toy_analysis(seed=0)['stability'].samples, 'pts': pts}, sys.argv[1])
''')


def test_fresh_process_same_bits(tmp_path):
    from setsens.toy_study import toy_analysis
    from setsens.graphical import estimate_solution_set
    out = tmp_path/'child.pt'
    env = {**os.environ, 'PYTHONHASHSEED': '12345', 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, '-c', _CHILD, str(out), str(Path(__file__).parent)], check=True, cwd=ROOT,
                   env=env, timeout=120)
    child = torch.load(out, weights_only=True)
    risk, _ = twin()
    pts, _ = estimate_solution_set(risk, DX_K, n=3, seed=11, idx=K, rtol=1e-12, maxiter=500)
    assert same(child['toy'], toy_analysis(seed=0)['stability'].samples)
    assert same(child['pts'], pts)


# ---------------------------------------------------------------- the AIF (paper 2), once setsens.aif exists

@pytest.mark.parametrize('p', [2, math.inf])
def test_aif_bitwise(p):
    A = pytest.importorskip('setsens.aif', reason='setsens.aif not exported yet')
    risk, _ = twin(noise=0.3)
    with global_rng_untouched(9): a, ia = A.aif(risk, p)
    with global_rng_untouched(10): b, ib = A.aif(risk, p)
    assert bool(torch.isfinite(a).all()) and float(a.norm()) > 0
    assert same(a, b) and same(ia.phi, ib.phi)
