"""Bad input: paper2 (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math, warnings
from functools import lru_cache

import pytest
import torch


from bad_inputs_common import f64, raises, mlp_risk


# ================================================================ setsens.kernels / setsens.dro / setsens.cases (paper 2, §5–6)

def _kdc(name):
    return pytest.importorskip(f'setsens.{name}', reason=f'setsens.{name} not exported yet')


@lru_cache(None)
def reg_data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, generator=g, dtype=f64), torch.randn(8, generator=g, dtype=f64)


PAPER2_CASES = [
    ('kernels', 'ntk-zero-row', lambda M, X, y: M.ntk_kernel(torch.cat([X, torch.zeros(1, 3, dtype=f64)])), ValueError, "X1, X2: the NTK's angle is undefined for a zero input row"),
    ('kernels', 'ntk-dtype', lambda M, X, y: M.ntk_kernel(X, X.float()), ValueError, 'X1, X2: different dtypes'),
    ('kernels', 'ridge-lam-0', lambda M, X, y: M.kernel_ridge(X, y, 0.), ValueError, 'lam: must be > 0'),
    ('kernels', 'ridge-y-nan', lambda M, X, y: M.kernel_ridge(X, y * math.nan, 1e-2), ValueError, 'y: contains NaN or Inf'),
    ('kernels', 'aif-p-0.5', lambda M, X, y: M.kernel_aif(X, y, 1e-2, 0.5), ValueError, 'p: the l_p attack needs p in [1, inf]'),
    ('kernels', 'robust-eps-negative', lambda M, X, y: M.robust_kernel_ridge(X, y, 1e-2, -1.), ValueError, 'eps: must be >= 0'),
    ('kernels', 'mnist-split', lambda M, X, y: M.load_mnist('val'), ValueError, "split: expected 'test' or 'train'"),
    ('kernels', 'mnist-missing-root', lambda M, X, y: M.load_mnist('test', '/nonexistent/mnist'), FileNotFoundError, "path: data folder '/nonexistent/mnist' does not exist"),
    ('dro', 'weights-u-0.5', lambda M, X, y: M.dro_weights(torch.ones(3, dtype=f64), 0.5), ValueError, 'u: the Wasserstein order must be in [1, inf]'),
    ('dro', 'weights-rule', lambda M, X, y: M.dro_weights(torch.ones(3, dtype=f64), 2, rule='x'), ValueError, "rule: expected 'exact' or 'theorem'"),
    ('dro', 'emp-u-3', lambda M, X, y: M.emp_linear(torch.ones(3, dtype=f64), X, y, 0.1, 2, 3), ValueError, 'u: the closed-form inner maximum is implemented for u ∈ {1, 2, ∞}'),
    ('dro', 'fit-eps-negative', lambda M, X, y: M.dro_linear_regression(X, y, -1.), ValueError, 'eps: must be >= 0'),
    ('dro', 'daif-maxiter-0', lambda M, X, y: M.distributional_aif(mlp_risk(), maxiter=0), ValueError, 'maxiter: must be a positive integer'),
    ('dro', 'daif-zero-gradients', lambda M, X, y: M.distributional_aif(_zero_loss_risk()), ValueError, 'risk: every ∇_x l_i vanishes'),
    ('cases', 'eq6-rows', lambda M, X, y: M.eq6_sensitivity(M.linear_basis, X, y[:3]), ValueError, 'X, y: 8 rows against 3 targets'),
    ('cases', 'eq6-X-nan', lambda M, X, y: M.eq6_sensitivity(M.linear_basis, X * math.nan, y), ValueError, 'X: contains NaN or Inf'),
    ('cases', 'corollary-5.1-m-above-M', lambda M, X, y: M.corollary_5_1_sensitivity(5, 3, 1., 1.), ValueError, 'm: need 1 ≤ m ≤ M = 3'),
    ('cases', 'theorem-5.4-budget', lambda M, X, y: M.theorem_5_4_ratio(1., 1., 1., 1., budget='x'), ValueError, "budget: expected 'clean' or 'noisy'"),
    ('cases', 'engine-p-0.5', lambda M, X, y: M.engine_sensitivity(M.linear_basis, X, y, X, y, p=0.5), ValueError, 'p: the l_p attack needs p in [1, inf]'),
    # bugs at the time of writing (see each message)
    ('kernels', 'aif-theta-shape', lambda M, X, y: M.kernel_aif(X, y, 1e-2, 2, theta=torch.ones(3, dtype=f64)), ValueError, 'theta:'),      # bare RuntimeError
    ('kernels', 'robust-maxiter-0', lambda M, X, y: M.robust_kernel_ridge(X, y, 1e-2, 0.1, maxiter=0), ValueError, 'maxiter:'),       # UnboundLocalError
    ('kernels', 'mnist-n-too-large', lambda M, X, y: M.mnist_regression_sample(20000, 0), ValueError, 'n:'),        # returns (20000, 392) half-images silently
    ('dro', 'fit-maxiter-0', lambda M, X, y: M.dro_linear_regression(X, y, 0.1, maxiter=0), ValueError, 'maxiter:'),  # accepted, warns "‖∇‖ = inf after 0 steps"
    ('dro', 'weights-all-zero-u-2', lambda M, X, y: M.dro_weights(torch.zeros(3, dtype=f64), 2), ValueError, 'c:'),   # NaN weights silently
    ('dro', 'weights-nan', lambda M, X, y: M.dro_weights(torch.full((3,), math.nan, dtype=f64), 2), ValueError, 'c: contains NaN'),  # NaN silently
    ('dro', 'emp-radius-negative', lambda M, X, y: M.emp_linear(torch.ones(3, dtype=f64), X, y, -1., 2, 1), ValueError, 'radius:'),  # accepted
    ('cases', 'eq6-p-0.5', lambda M, X, y: M.eq6_sensitivity(M.linear_basis, X, y, p=0.5), ValueError, 'p:'),            # accepted silently
    ('cases', 'eq6-scale-negative', lambda M, X, y: M.eq6_sensitivity(M.linear_basis, X, y, scale=-1.), ValueError, 'scale:'),   # accepted
    ('cases', 'eq6-theta-zero', lambda M, X, y: M.eq6_sensitivity(M.linear_basis, X, y, theta=torch.zeros(3, dtype=f64)), ValueError, 'theta:'),  # 0/0: NaN silently
    ('cases', 'eq6-X-float32', lambda M, X, y: M.eq6_sensitivity(M.linear_basis, X.float(), y), ValueError, 'X, y: different dtypes'),  # bare RuntimeError
    ('cases', 'fit-basis-y-rows', lambda M, X, y: M.fit_basis_regression(M.linear_basis, X, y[:2]), ValueError, 'X, y'),  # bare RuntimeError
]


def _zero_loss_risk():
    from setsens.risk import Risk
    r = mlp_risk()
    with torch.no_grad(): Y = r.model(r.X)
    return Risk(r.model, 'mse', r.X, Y)


@pytest.mark.parametrize('mod,call,exc,msg', [(c[0],) + c[2:] for c in PAPER2_CASES], ids=[f'{c[0]}-{c[1]}' for c in PAPER2_CASES])
def test_paper2_bad_input(mod, call, exc, msg):
    M = _kdc(mod)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        with raises(exc, msg):
            call(M, *reg_data())


def test_paper2_delta_zero():
    "δ = 0: zero attack radius gives a zero influence and the standard fit, exactly."
    K, D = _kdc('kernels'), _kdc('dro')
    X, y = reg_data()
    Xn = X / X.norm(dim=1, keepdim=True)
    I, _ = K.kernel_aif(Xn, y, 1e-2, 2, scale=0.)
    assert bool((I == 0).all())
    th, info = K.robust_kernel_ridge(Xn, y, 1e-2, 0.)
    assert info.converged and torch.equal(th, K.kernel_ridge(Xn, y, 1e-2))
    dw, dinfo = D.distributional_aif(mlp_risk(), scale=0.)
    assert torch.equal(dw, torch.zeros(13, dtype=f64))
