"""Bad input: krylov (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math, re, warnings

import pytest
import torch
from hypothesis import given, settings, HealthCheck, strategies as st

from setsens.sets import point_to_set_distance, excess, hausdorff
from setsens.krylov import lsqr, cgls

from bad_inputs_common import f64, SOLVERS, raises, sym_singular


# ================================================================ setsens.krylov

def _solver_case(name, make, exc, msg):
    return [pytest.param(s, make, exc, msg, id=f'{s.__name__}-{name}') for s in SOLVERS]


KRYLOV_CASES = (
    _solver_case('maxiter-0', lambda A, b: dict(A=A, b=b, maxiter=0), ValueError, 'maxiter: must be a positive integer')
    + _solver_case('b-int', lambda A, b: dict(A=A, b=torch.arange(8)), TypeError, 'b: expected a floating dtype')
    + _solver_case('b-empty', lambda A, b: dict(A=A[:0, :0], b=b[:0]), ValueError, 'b: is empty')
    + _solver_case('x0-float32', lambda A, b: dict(A=A, b=b, x0=b.float()), ValueError, 'x0, b: different dtypes')
    + _solver_case('rtol-nan', lambda A, b: dict(A=A, b=b, rtol=math.nan), ValueError, 'rtol: must be >= 0')
    + [pytest.param(lsqr, lambda A, b: dict(A=A, b=b, AT=A.float()), ValueError, 'AT, b: different dtypes', id='lsqr-AT-float32'),
       pytest.param(cgls, lambda A, b: dict(A=A * math.inf, b=b), ValueError, 'A: contains NaN or Inf', id='cgls-A-inf')]
)


@pytest.mark.parametrize('solver,make,exc,msg', KRYLOV_CASES)
def test_krylov_bad_input(solver, make, exc, msg):
    A, _ = sym_singular()
    kw = make(A, A @ torch.ones(8, dtype=f64))
    with raises(exc, msg):
        solver(kw.pop('A'), kw.pop('b'), **kw)


@pytest.mark.parametrize('solver', SOLVERS, ids=lambda s: s.__name__)
@pytest.mark.parametrize('op,start', [('singular', 2), ('2I', 2), ('2I', 3)])
def test_krylov_operator_turns_nan(solver, op, start):
    """An operator that returns NaN after its first `start` (checked) products: the solve must not return
    NaN, must report converged=False and warn with a reason that says what happened (a non-finite
    product), not that the tolerance was below the attainable accuracy."""
    A = sym_singular()[0] if op == 'singular' else 2 * torch.eye(8, dtype=f64)
    b = A @ torch.ones(8, dtype=f64)
    calls = [0]
    def f(v):
        calls[0] += 1
        return (A @ v) * (math.nan if calls[0] > start else 1.)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        x, info = solver(f, b)
    assert bool(torch.isfinite(x).all())
    if calls[0] > start:                                   # the solver was served a NaN
        assert not bool(info.converged)
        msgs = [str(m.message) for m in w if issubclass(m.category, RuntimeWarning)]
        assert msgs and re.search('non-finite|NaN', msgs[0]), f'reason given: {info.reason!r}'
    else:
        assert bool(info.converged) and not w


@pytest.mark.parametrize('solver', SOLVERS, ids=lambda s: s.__name__)
def test_krylov_unattainable_tolerance_keeps_minimum_norm(solver):
    """rtol = 0 on a singular, inconsistent system: the minimum-norm least-squares solution is reached
    after rank(A) = 3 iterations; running on may warn, but the returned x must still be that solution
    (LSQR returned ‖x‖ ≈ 1e16 and MINRES a point 7× too long at the time of writing)."""
    A, b, K = _problem(6, 0.5, False, 3)
    xs = torch.linalg.pinv(A, hermitian=True) @ b
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        x, info = solver(A, b, rtol=0.)
    assert bool(torch.isfinite(x).all())
    assert float((x - xs).norm()) <= 1e-8 * float(xs.norm()), f'‖x‖ = {float(x.norm()):.3g}, ‖x†‖ = {float(xs.norm()):.3g}'


@pytest.mark.parametrize('solver', SOLVERS, ids=lambda s: s.__name__)
def test_krylov_delta_zero_rhs_with_start(solver):
    """δ = 0: b = 0 from a start x0. The exact answer is x0's part in ker A (reached in one projection);
    the solvers must report it converged without a warning and without running to maxiter."""
    A, K = sym_singular()
    x0 = torch.randn(8, dtype=f64, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        x, info = solver(A, torch.zeros(8, dtype=f64), x0)
    assert bool(info.converged)
    torch.testing.assert_close(x, K @ (K.T @ x0), rtol=0, atol=1e-10)


def test_krylov_zero_operator_documented():
    "A = 0: every x is a least-squares solution; the minimum-norm one is 0 (finite, converged)."
    b = torch.ones(4, dtype=f64)
    for s in SOLVERS:
        x, info = s(torch.zeros(4, 4, dtype=f64), b)
        assert torch.equal(x, torch.zeros(4, dtype=f64)) and bool(info.converged)


# ---------------------------------------------------------------- properties §2 lists that test_krylov/test_sets lack

problems = st.tuples(st.integers(6, 20), st.floats(0.2, 0.9), st.booleans(), st.integers(0, 10_000))
hyp = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _problem(p, frac, consistent, seed):
    A, K = sym_singular(p, max(2, int(frac * p)), seed)
    b = torch.randn(p, dtype=f64, generator=torch.Generator().manual_seed(seed + 1))
    return A, (A @ b if consistent else b), K


@hyp
@given(problems)
def test_lsqr_residual_norm_never_increases(prob):
    A, b, _ = _problem(*prob)
    # within the first rank(A) iterations (beyond them see test_krylov_unattainable_tolerance_keeps_minimum_norm)
    r = torch.stack([lsqr(A, b, rtol=0., maxiter=k, warn=False)[1].resnorm for k in range(1, int(torch.linalg.matrix_rank(A)) + 1)])
    assert (r[1:] <= r[:-1] * (1 + 1e-10) + 1e-12).all()


@hyp
@given(problems)
def test_cgls_from_zero_is_minimum_norm(prob):
    A, b, K = _problem(*prob)
    x, info = cgls(A, b, rtol=1e-12, warn=False)
    assert (K.T @ x).norm() <= 1e-8 * max(x.norm().item(), 1.)
    xs = torch.linalg.pinv(A, hermitian=True) @ b
    assert (x - xs).norm() <= 1e-6 * max(xs.norm().item(), 1.)


coords = st.lists(st.floats(-10, 10, allow_nan=False, width=64), min_size=6, max_size=24)


@hyp
@given(coords, coords, st.lists(st.floats(-10, 10, allow_nan=False, width=64), min_size=2, max_size=2))
def test_point_to_set_distance_is_1_lipschitz_and_excess_bounds(c, d, u):
    C = torch.tensor(c[: len(c) // 2 * 2], dtype=f64).reshape(-1, 2)
    D = torch.tensor(d[: len(d) // 2 * 2], dtype=f64).reshape(-1, 2)
    w, v = C[0], torch.tensor(u, dtype=f64)
    # |d(w, D) − d(v, D)| ≤ ‖w − v‖
    assert abs(point_to_set_distance(w, D) - point_to_set_distance(v, D)) <= (w - v).norm() + 1e-12
    # e(C, D) = max_c d(c, D) ≥ d(w, D) for w ∈ C; h(C, D) ≥ both excesses; not symmetric in general
    assert excess(C, D) >= point_to_set_distance(w, D) - 1e-12
    assert hausdorff(C, D) == max(excess(C, D), excess(D, C))


def test_excess_is_not_symmetric():
    C = torch.tensor([[0., 0.]], dtype=f64)
    D = torch.tensor([[0., 0.], [3., 4.]], dtype=f64)
    assert excess(C, D).item() == 0. and excess(D, C).item() == 5.
