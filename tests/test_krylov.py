"""setsens.krylov: float64 oracles (torch.linalg.pinv), the x0 property, batching, bad input, properties."""
import math, warnings
import pytest
import torch
from hypothesis import given, settings, HealthCheck, strategies as st
from setsens.krylov import minres, lsqr, cgls, KrylovInfo

from problems import sym_matrix  # shared: tests/problems.py
F64 = torch.float64


def sym(p, r, cond=100., indef=False, seed=0, dtype=F64):
    "Random symmetric p×p matrix of rank r (tests/problems.py's `sym_matrix`, this module's argument order)."
    return sym_matrix(p, r, cond, seed=seed, dtype=dtype, indef=indef)


def rect(m, n, r, cond=100., seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=F64))
    W, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=F64))
    return (U*torch.logspace(0, -math.log10(cond), r, dtype=F64)) @ W.T


def rel(x, y): return ((x - y).norm(dim=0)/y.norm(dim=0).clamp_min(1e-300)).max().item()


def rhs(p, k, seed): return torch.randn(p, k, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------- oracles
@pytest.mark.parametrize('indef', [False, True])
@pytest.mark.parametrize('consistent', [False, True])
@pytest.mark.parametrize('cond', [10., 1e3])
def test_minres_matches_pinv(indef, consistent, cond):
    A = sym(50, 30, cond, indef, seed=int(cond) + 2*indef)
    b = rhs(50, 3, 1)
    if consistent: b = A @ b
    x, info = minres(A, b, rtol=1e-12)
    xs = torch.linalg.pinv(A, hermitian=True) @ b
    assert rel(x, xs) <= 1e-8
    assert info.converged.shape == (3,) and bool(info.converged.all()) and info.reason == 'converged'
    # reported norms are the true ones of the returned x
    torch.testing.assert_close(info.resnorm, (b - A @ x).norm(dim=0), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(info.normres, (A @ (b - A @ x)).norm(dim=0), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize('solver', [minres, lsqr, cgls])
@pytest.mark.parametrize('indef', [False, True])
def test_x0_keeps_its_null_space_part(solver, indef):
    A = sym(40, 25, 100., indef, seed=3)
    b, X0 = rhs(40, 2, 2), rhs(40, 2, 3)
    x, info = solver(A, b, X0, rtol=1e-12)
    P = torch.linalg.pinv(A, hermitian=True)
    assert rel(x, P @ b + X0 - P @ (A @ X0)) <= 1e-8 and bool(info.converged.all())


@pytest.mark.parametrize('solver', [lsqr, cgls])
@pytest.mark.parametrize('shape', [(50, 30), (30, 50)])
def test_rectangular_with_AT(solver, shape):
    m, n = shape
    A = rect(m, n, 20, seed=m)
    b, X0 = rhs(m, 2, 0), rhs(n, 2, 1)
    P = torch.linalg.pinv(A)
    x, info = solver(A, b, rtol=1e-12)
    assert x.shape == (n, 2) and rel(x, P @ b) <= 1e-8
    x, info = solver(lambda v: A @ v, b, X0, AT=lambda u: A.T @ u, rtol=1e-12)
    assert rel(x, P @ b + X0 - P @ (A @ X0)) <= 1e-8
    x, info = solver(A, b[:, 0], AT=A.T.contiguous(), rtol=1e-12)          # vector b, explicit AT tensor
    assert x.shape == (n,) and info.converged.ndim == 0 and rel(x[:, None], (P @ b)[:, :1]) <= 1e-8


def test_lsqr_damp_is_tikhonov():
    A = rect(40, 25, 15, seed=1)
    b = rhs(40, 2, 4)
    for lam in (1e-2, 0.3):
        x, info = lsqr(A, b, damp=lam, rtol=1e-12)
        xs = torch.linalg.solve(A.T @ A + lam**2*torch.eye(25, dtype=F64), A.T @ b)
        assert rel(x, xs) <= 1e-8 and bool(info.converged.all())


def test_batched_equals_looped():
    A = sym(60, 40, 100., indef=True, seed=5)
    B = rhs(60, 5, 3); B[:, :2] = A @ B[:, :2]
    for solver in (minres, lsqr, cgls):
        for maxiter, rtol, tol in [(6, 0., 1e-12), (3000, 1e-12, 1e-8)]:
            xb, ib = solver(A, B, rtol=rtol, maxiter=maxiter, warn=False)
            for j in range(5):
                xj, ij = solver(A, B[:, j], rtol=rtol, maxiter=maxiter, warn=False)
                assert (xb[:, j] - xj).norm() <= tol*xj.norm(), (solver.__name__, maxiter, j)
                assert bool(ib.converged[j]) == bool(ij.converged)


def test_callable_receives_blocks_and_vectors():
    A = sym(30, 20, seed=1)
    seen = []
    def op(v): seen.append(tuple(v.shape)); return A @ v
    minres(op, rhs(30, 4, 0), rtol=1e-8)
    assert set(seen) == {(30, 4)}                   # one block product per iteration
    seen.clear(); minres(op, rhs(30, 1, 0)[:, 0], rtol=1e-8)
    assert set(seen) == {(30,)}


def test_deterministic_and_counts():
    A = sym(40, 30, 100., True, seed=2)
    b = rhs(40, 3, 0)
    x1, i1 = minres(A, b, rtol=1e-10); x2, i2 = minres(A, b, rtol=1e-10)
    assert torch.equal(x1, x2) and i1.matvecs == i2.matvecs and i1.iterations == i2.iterations
    calls = []
    x, info = minres(lambda v: calls.append(1) or A @ v, b, rtol=1e-10)
    assert info.matvecs == len(calls)              # every product counted, the final check included
    h = info.history
    assert h['resnorm'].shape == h['normres'].shape == (len(h['matvecs']), 3)


def test_zero_rhs_and_float32():
    A = sym(20, 10, seed=0)
    x, info = minres(A, torch.zeros(20, dtype=F64))
    assert torch.equal(x, torch.zeros(20, dtype=F64)) and bool(info.converged) and info.iterations == 0
    A32, b32 = A.float(), torch.randn(20, generator=torch.Generator().manual_seed(0))
    for solver in (minres, lsqr, cgls):
        x, info = solver(A32, b32, rtol=1e-4)
        assert x.dtype == torch.float32 and bool(info.converged)
        xs = torch.linalg.pinv(A, hermitian=True) @ b32.double()
        assert rel(x.double()[:, None], xs[:, None]) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_matches_cpu():
    A = sym(50, 30, 100., True, seed=1); b = rhs(50, 4, 0)
    for solver in (minres, lsqr, cgls):
        xc, _ = solver(A, b, rtol=1e-10)
        xg, ig = solver(A.cuda(), b.cuda(), rtol=1e-10)
        assert xg.device.type == 'cuda' and ig.converged.device.type == 'cuda'
        assert rel(xg.cpu(), xc) < 1e-7


# ---------------------------------------------------------------- non-convergence
@pytest.mark.parametrize('solver', [minres, lsqr, cgls])
def test_nonconvergence_warns(solver):
    A = sym(60, 40, 1e3, seed=9)
    b = rhs(60, 2, 0)
    with pytest.warns(RuntimeWarning, match='maxiter'):
        x, info = solver(A, b, rtol=1e-12, maxiter=3)
    assert not bool(info.converged.any()) and 'maxiter' in info.reason and info.iterations == 3
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        solver(A, b, rtol=1e-12, maxiter=3, warn=False)          # warn=False is silent


def test_float32_below_attainable_accuracy_is_reported():
    A = sym(200, 120, 1e4, seed=1, dtype=torch.float32)
    b = torch.randn(200, generator=torch.Generator().manual_seed(5))
    with pytest.warns(RuntimeWarning, match='attainable accuracy'):
        x, info = minres(A, b, rtol=1e-7, maxiter=3000)
    assert not bool(info.converged)
    # the returned iterate is still a good one (the best truly checked), not the diverged last one
    assert float(info.normres) <= 1e-2*float((A @ b).norm())


# ---------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    A, b = sym(10, 6), rhs(10, 1, 0)[:, 0]
    cases = [
        (lambda: minres(A, b, maxiter=0), ValueError, 'maxiter'),
        (lambda: minres(A, b, maxiter=2.5), ValueError, 'maxiter'),
        (lambda: lsqr(A, b, maxiter=-1), ValueError, 'maxiter'),
        (lambda: cgls(A, b, maxiter=0), ValueError, 'maxiter'),
        (lambda: minres(A, b, rtol=-1e-3), ValueError, 'rtol'),
        (lambda: minres(A, b, atol=float('nan')), ValueError, 'atol'),
        (lambda: lsqr(A, b, damp=-1.), ValueError, 'damp'),
        (lambda: minres(A, torch.randn(9, dtype=F64)), ValueError, 'A, b'),
        (lambda: minres(A, torch.randn(10, 2, 2, dtype=F64)), ValueError, 'b'),
        (lambda: minres(A, torch.full((10,), float('nan'), dtype=F64)), ValueError, 'b: contains NaN'),
        (lambda: minres(A, b, x0=torch.full((10,), float('inf'), dtype=F64)), ValueError, 'x0'),
        (lambda: minres(A, b, x0=torch.zeros(9, dtype=F64)), ValueError, 'x0'),
        (lambda: minres(A, b, x0=torch.zeros(10, 1, dtype=F64)), ValueError, 'x0'),
        (lambda: minres(A.clone().fill_(float('nan')), b), ValueError, 'A: contains NaN'),
        (lambda: minres(torch.randn(10, 7, dtype=F64), b), ValueError, 'square'),
        (lambda: minres(torch.randn(10, 10, dtype=F64), b), ValueError, 'not symmetric'),
        (lambda: minres(A.float(), b), ValueError, 'dtype'),
        (lambda: minres(A, b.float()), ValueError, 'dtype'),
        (lambda: minres(A, torch.arange(10)), TypeError, 'b'),
        (lambda: minres('A', b), TypeError, 'A'),
        (lambda: minres(lambda v: v[:5], b), ValueError, 'A: maps'),
        (lambda: minres(lambda v: 3, b), TypeError, 'A'),
        (lambda: minres(lambda v: v.float(), b), ValueError, 'A: returned'),
        (lambda: minres(lambda v: v*float('nan'), b), ValueError, 'A: returned NaN'),
        (lambda: minres(A, b, callback=3), TypeError, 'callback'),
        (lambda: lsqr(torch.randn(10, 4, dtype=F64), b, AT=torch.randn(5, 10, dtype=F64)), ValueError, 'AT'),
        (lambda: lsqr(torch.randn(8, 4, dtype=F64), b), ValueError, 'A, b'),
        (lambda: cgls(lambda v: A @ v, b, torch.zeros(10, dtype=F64), AT=lambda u: u[:3]), ValueError, 'AT: maps'),
        (lambda: lsqr(A, torch.randn(10, dtype=torch.complex128)), TypeError, 'b'),
    ]
    for f, exc, msg in cases:
        with pytest.raises(exc, match=msg.replace('(', r'\(')):
            f()


# ---------------------------------------------------------------- properties (hypothesis)
problems = st.tuples(st.integers(8, 30), st.floats(0.2, 0.9), st.sampled_from([10., 1e2, 1e3]),
                     st.booleans(), st.booleans(), st.integers(0, 10_000))


def _problem(p, frac, cond, indef, consistent, seed):
    r = max(2, int(frac*p))
    A = sym(p, r, cond, indef, seed=seed)
    b = rhs(p, 1, seed + 1)[:, 0]
    if consistent: b = A @ b
    return A, b


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems)
def test_minres_normal_residual_never_increases(prob):
    "minres minimises ‖A r‖ over nested Krylov spaces: the true ‖A r_k‖ of its iterates is monotone."
    A, b = _problem(*prob)
    xs = []
    minres(A, b, rtol=1e-10, maxiter=4*A.shape[0], callback=lambda x: xs.append(x.clone()), warn=False)
    nAb = (A @ b).norm()
    ar = torch.stack([(A @ (b - A @ x)).norm() for x in [torch.zeros_like(b)] + xs])
    assert (ar[1:] <= ar[:-1] + 1e-11*nAb).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems)
def test_cgls_residual_norm_never_increases(prob):
    A, b = _problem(*prob)
    r = []
    for k in range(1, min(3*A.shape[0], 40)):
        x, info = cgls(A, b, rtol=0., maxiter=k, warn=False)
        r.append(info.resnorm)
    r = torch.stack(r)
    assert (r[1:] <= r[:-1]*(1 + 1e-10) + 1e-12).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems)
def test_minimum_norm(prob):
    A, b = _problem(*prob)
    evals, Q = torch.linalg.eigh(A)
    K = Q[:, evals.abs() <= 1e-10]                  # orthonormal basis of ker A
    for solver in (minres, lsqr):
        x, info = solver(A, b, rtol=1e-12, warn=False)
        assert bool(info.converged)
        # a least-squares solution with no component in ker A, i.e. the minimum-norm one
        assert (K.T @ x).norm() <= 1e-8*max(x.norm().item(), 1.)
        xs = torch.linalg.pinv(A, hermitian=True) @ b
        assert (x - xs).norm() <= 1e-7*xs.norm()


# ---------------------------------------------------------------- issue 17 / fuzz bugs: scale, sparse, autograd
@pytest.mark.parametrize('solver', [minres, lsqr, cgls])
@pytest.mark.parametrize('dtype,c', [(F64, 1e160), (F64, 1e300), (F64, 1e-300), (torch.float32, 1e25), (torch.float32, 1e-30)])
def test_huge_and_tiny_rhs_solve_like_moderate(solver, dtype, c):
    "b and x0 are scaled per column by a power of two: x(c·b) = c·x(b), checked against pinv in float64."
    A = sym(30, 20, 100., seed=11)
    b = rhs(30, 2, 12); x0 = rhs(30, 2, 13)
    x, info = solver(A.to(dtype), (c*b).to(dtype), (c*x0).to(dtype), rtol=1e-12 if dtype == F64 else None, warn=False)
    assert info.converged.all() and info.status == 'converged', info
    P = torch.linalg.pinv(A, hermitian=True)
    ref = P @ b + x0 - P @ (A @ x0)                 # the min-norm solution plus the ker-A part of x0
    tol = 1e-8 if dtype == F64 else 2e-2
    assert rel(x.double()/c, ref) <= tol
    assert torch.isfinite(info.resnorm).all() and (info.resnorm.double()/c <= 10*(A @ ref - b).norm(dim=0)).all()


def test_columns_of_different_scales_are_independent():
    "Each column has its own scale: a 1e200 column next to a 1e-200 one gives the results of each alone."
    A = sym(25, 15, 50., indef=True, seed=14)
    b = rhs(25, 2, 15)*torch.tensor([1e200, 1e-200], dtype=F64)
    X, info = minres(A, b, rtol=1e-12)
    assert info.converged.all()
    s = torch.tensor([1e200, 1e-200], dtype=F64)
    for j in range(2):
        x, _ = minres(A, b[:, j], rtol=1e-12)
        assert rel(X[:, j:j+1]/s[j], x[:, None]/s[j]) <= 1e-12     # batched = alone (up to the BLAS's rounding)
    assert rel(X/s, torch.linalg.pinv(A, hermitian=True) @ (b/s)) <= 1e-8


@pytest.mark.parametrize('layout', ['coo', 'csr'])
@pytest.mark.parametrize('solver', [minres, lsqr, cgls])
def test_sparse_matrix(solver, layout):
    "A sparse A solves like the dense one (pinv oracle); a non-symmetric sparse A is refused by minres, naming A."
    A = sym(20, 12, 30., seed=16)*(torch.rand(20, 20, generator=torch.Generator().manual_seed(0)) < 0.5)
    A = (A + A.T)/2
    S = A.to_sparse() if layout == 'coo' else A.to_sparse_csr()
    b = rhs(20, 1, 17)[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)        # torch: CSR support is beta
        x, info = solver(S, b, rtol=1e-12)
    assert bool(info.converged)
    assert rel(x, torch.linalg.pinv(A, hermitian=True) @ b) <= 1e-7
    N = A.clone(); N[0, 1] += 1.
    with pytest.raises(ValueError, match='^A: is not symmetric'): minres(N.to_sparse(), b)
    with pytest.raises((ValueError, TypeError), match='^A: '): minres(torch.sparse_coo_tensor(
        torch.tensor([[0], [0]]), torch.tensor([float('nan')], dtype=F64), (20, 20)), b)


@pytest.mark.parametrize('solver', [minres, lsqr, cgls])
def test_no_autograd_graph_across_iterations(solver):
    "b, x0 or a dense A requiring grad: the result carries no graph, and equals the solve with detached inputs."
    A = sym(15, 10, seed=18); b = rhs(15, 1, 19)[:, 0]; x0 = rhs(15, 1, 20)[:, 0]
    ref, _ = solver(A, b, x0)
    got, _ = solver(A.clone().requires_grad_(), b.clone().requires_grad_(), x0.clone().requires_grad_())
    assert got.grad_fn is None and not got.requires_grad
    assert torch.equal(got, ref)


def test_info_repr_is_deterministic():
    "KrylovInfo's repr (what notebooks print) has no wall time; `seconds` is still a field."
    A = sym(10, 6, seed=21)
    _, info = minres(A, rhs(10, 1, 22)[:, 0])
    assert 'seconds' not in repr(info) and info.seconds > 0


# ---------------------------------------------------------------- issue 14: the driver moved to setsens.krylov_base
def test_names_before_the_split_still_import():
    "setsens.krylov keeps every name other code imports from it: the same objects as in their new home, without a warning."
    import setsens.krylov as K, setsens.krylov_base as KB
    from setsens.linalg import lanczos
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        from setsens.krylov import KrylovInfo as KI, default_rtol, _default_rtol, _show_progress, _lanczos, lanczos as L
    assert KI is KB.KrylovInfo and default_rtol is _default_rtol is KB.default_rtol and _show_progress is KB.show_progress
    assert L is _lanczos is lanczos
    assert sorted(K.__all__) == ['KrylovInfo', 'cgls', 'lsqr', 'minres']
    _, info = minres(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64))
    assert type(info) is KB.KrylovInfo and info.status == 'converged'
