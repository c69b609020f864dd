"""Bad input: graphical (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math, warnings

import pytest
import torch

from setsens.graphical import (graphical_derivative, coderivative, lipschitz_modulus, training_stability,
                               solution_shift, estimate_solution_set)

from bad_inputs_common import f64, raises, dense_pair, mlp_risk


# ================================================================ setsens.graphical (dense)

GRAPHICAL_CASES = [
    ('gd-nonsquare', lambda A, B, mu: graphical_derivative(A[:2], B, mu), ValueError, 'dwR: ∇_w R must be square'),
    ('gd-mu-length', lambda A, B, mu: graphical_derivative(A, B, mu[:1]), ValueError, 'mu: expected shape (2,)'),
    ('gd-dxR-float32', lambda A, B, mu: graphical_derivative(A, B.float(), mu), ValueError, 'dwR, dxR: different dtypes'),
    ('gd-dwR-nan', lambda A, B, mu: graphical_derivative(A * math.nan, B, mu), ValueError, 'dwR: contains NaN or Inf'),
    ('gd-mu-inf', lambda A, B, mu: graphical_derivative(A, B, mu * math.inf), ValueError, 'mu: contains NaN or Inf'),
    ('coderivative-p-shape', lambda A, B, mu: coderivative(A, B, mu), ValueError, 'p: expected shape (3,)'),
    ('coderivative-p-int', lambda A, B, mu: coderivative(A, B, torch.ones(3, dtype=torch.long)), TypeError, 'p: expected a floating dtype'),
    ('lipschitz-rtol-0', lambda A, B, mu: lipschitz_modulus(A, B, rtol=0.), ValueError, 'rtol: must be > 0'),
    ('lipschitz-dxR-1d', lambda A, B, mu: lipschitz_modulus(A, B[:, 0]), ValueError, 'dxR: expected 2 dimensions'),
    ('lipschitz-empty', lambda A, B, mu: lipschitz_modulus(A[:0, :0], B[:0]), ValueError, 'dwR: is empty'),
    ('stability-n-0', lambda A, B, mu: training_stability(A, B, mu, torch.zeros(3, dtype=f64), n=0), ValueError, 'n: need at least one sample'),
]


@pytest.mark.parametrize('call,exc,msg', [c[1:] for c in GRAPHICAL_CASES], ids=[c[0] for c in GRAPHICAL_CASES])
def test_graphical_dense_bad_input(call, exc, msg):
    with raises(exc, msg):
        call(*dense_pair())


def test_graphical_degenerate_documented():
    "Zero Hessian: κ = inf (not Lipschitz-like) or 0 (nothing moves); δ = 0: the set through 0."
    A, B, mu = dense_pair()
    assert lipschitz_modulus(0 * A, B) == math.inf
    assert lipschitz_modulus(0 * A, 0 * B) == 0.
    D = graphical_derivative(A, B, 0 * mu)
    assert torch.equal(D.point, torch.zeros(3, dtype=f64)) and D.dim == 1
    with pytest.warns(RuntimeWarning, match='outside range'):
        D0 = graphical_derivative(0 * A, B, mu)
    assert bool(torch.isfinite(D0.point).all()) and D0.dim == 3
    st_ = training_stability(A, B, 0 * mu, torch.zeros(3, dtype=f64), generator=torch.Generator().manual_seed(0))
    assert st_.distance == 0. and bool(torch.isfinite(st_.samples).all())


# ================================================================ setsens.graphical (matrix-free)

SHIFT_CASES = [
    ('shift-idx-empty', lambda r: solution_shift(r, r.X[:0], idx=[]), ValueError, 'is empty'),
    ('shift-idx-empty-X-shaped', lambda r: solution_shift(r, r.X, idx=torch.tensor([], dtype=torch.long)), ValueError, 'idx: the perturbed index set K is empty'),
    ('shift-idx-negative', lambda r: solution_shift(r, r.X[:1], idx=[-1]), ValueError, 'idx: indices must lie in [0, 6)'),
    ('shift-maxiter-0', lambda r: solution_shift(r, r.X, maxiter=0), ValueError, 'maxiter: must be a positive integer'),
    ('shift-x0-float32', lambda r: solution_shift(r, r.X, x0=torch.zeros(r.p)), ValueError, 'x0, b: different dtypes'),
    ('shift-x0-shape', lambda r: solution_shift(r, r.X, x0=torch.zeros(r.p + 1, dtype=f64)), ValueError, 'x0: expected shape'),
    ('shift-dX-inf', lambda r: solution_shift(r, r.X * math.inf), ValueError, 'dX: contains NaN or Inf'),
    ('shift-solver-int', lambda r: solution_shift(r, r.X, solver=3), ValueError, 'solver: expected one of'),
    ('ess-maxiter-0', lambda r: estimate_solution_set(r, r.X, n=2, seed=0, maxiter=0), ValueError, 'maxiter: must be a positive integer'),
    ('ess-idx-empty', lambda r: estimate_solution_set(r, r.X[:0], n=2, seed=0, idx=[]), ValueError, 'is empty'),
    ('ess-x0-scale-nan', lambda r: estimate_solution_set(r, r.X, n=2, seed=0, x0_scale=math.nan), ValueError, 'x0_scale'),
    # bugs at the time of writing: float indices are truncated to ints, n=2.5 becomes 2, seed=None
    # fails inside int() with a message that does not name the argument
    ('shift-idx-float', lambda r: solution_shift(r, r.X[:1], idx=[0.5]), TypeError, 'idx:'),
    ('ess-n-float', lambda r: estimate_solution_set(r, r.X, n=2.5, seed=0), ValueError, 'n:'),
    ('ess-seed-none', lambda r: estimate_solution_set(r, r.X, n=2, seed=None), TypeError, 'seed:'),
]


@pytest.mark.parametrize('call,exc,msg', [c[1:] for c in SHIFT_CASES], ids=[c[0] for c in SHIFT_CASES])
def test_solution_shift_bad_input(call, exc, msg):
    with raises(exc, msg):
        call(mlp_risk())


def test_solution_shift_delta_zero():
    "δ = 0: ΔX = 0 gives Δw = 0 exactly (all points, or a perturbed index set)."
    r = mlp_risk()
    for kw in (dict(dX=0 * r.X), dict(dX=0 * r.X[:2], idx=[0, 3])):
        dw, info = solution_shift(r, **kw)
        assert torch.equal(dw, torch.zeros(r.p, dtype=f64)) and bool(info.converged)


def test_estimate_solution_set_delta_zero():
    """δ = 0: the estimated set is w̄ + ker H, so the samples are w̄ + (the ker-H part of their starts).
    They must come back converged, without a warning (the solver must not spin to maxiter on b = 0)."""
    r = mlp_risk()
    H = torch.autograd.functional.hessian(lambda w: _value(r, w), r.w)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        pts, infos = estimate_solution_set(r, 0 * r.X, n=3, seed=0, rtol=1e-10)
    assert all(bool(i.converged) for i in infos)
    assert bool(torch.isfinite(pts).all())
    assert float((H @ (pts - r.w).T).abs().max()) <= 1e-8 * max(1., float(H.abs().max()))


def _value(r, w):
    "R(w) of `mlp_risk` by plain autograd (independent of Risk's own products)."
    from torch.func import functional_call
    prm = r.unflatten(w)
    return (0.5 * (functional_call(r.model, prm, (r.X,)) - r.Y) ** 2).sum(1).mean()
