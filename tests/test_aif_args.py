"""Arguments of the AIF family (setsens.aif, .kernels, .dro, .cases; the dense checks of .graphical) — issue 15 §6.

No silent wrong answers: each case either raises an error whose message names the user's argument (and the dtype,
for dtype problems), or returns a result checked against an independent computation written out here.
"""
import math, re, warnings
from functools import lru_cache

import pytest
import torch
from torch import nn

from setsens.risk import Risk
from setsens import aif as A, robust as RB, kernels as K, dro as D, dro_study as DS, cases as C, cases_study as CS
from setsens.graphical import lipschitz_modulus, graphical_derivative, coderivative

f64 = torch.float64
HALF = [torch.float16, torch.bfloat16]
E = re.escape


def raises(exc, msg):
    return pytest.raises(exc, match=E(msg))


from problems import mlp_risk, flat_loss  # shared: tests/problems.py


def dense_hessian(risk):
    "H = ∇²_w R by torch.func.hessian of the risk as a function of the flat parameters (independent of setsens' HVPs)."
    R, w = flat_loss(risk.model, lambda out, Y: 0.5*((out - Y)**2).sum(-1).mean(), risk.X, risk.Y)
    return torch.func.hessian(R)(w)


@lru_cache(None)
def reg_data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, 3, generator=g, dtype=f64)
    return X / X.norm(dim=1, keepdim=True), torch.randn(8, generator=g, dtype=f64)


def linreg_risk(X, y):
    "½(y − θᵀx)² without intercept at the least-squares θ̂."
    w = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    m = nn.Linear(X.shape[1], 1, bias=False).double()
    with torch.no_grad(): m.weight.copy_(w[None])
    return Risk(m, 'mse', X, y[:, None]), w


# ================================================================ aif_confidence_interval: n ≥ 2

@pytest.mark.parametrize('method', ['krylov', 'dense'])
def test_ci_one_example_refused(method):
    X = torch.tensor([[1.3]], dtype=f64); y = torch.tensor([0.4], dtype=f64)
    m = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad(): m.weight.fill_(0.1)          # residual ≠ 0, so ∇_x l ≠ 0: only n = 1 is at fault
    r = Risk(m, 'mse', X, y[:, None])
    with raises(ValueError, "risk: Remark 2's interval needs at least 2 examples"):
        A.aif_confidence_interval(r, 2, method=method)
    with raises(ValueError, 'got n = 1'):
        A.aif_confidence_interval(r, 2, method=method)


@pytest.mark.parametrize('method', ['krylov', 'dense'])
def test_ci_two_examples_against_closed_form(method):
    """n = 2 (the smallest allowed), one feature: ζ_i = −H⁻¹ (θx_i − r_i) s φ_i with H = mean x², φ_i = sgn(−r_iθ),
    s = mean|x|; centre = mean ζ, s.e. = sqrt(var₀(ζ)/n) (1/n variance), bounds centre ± z·s.e."""
    X = torch.tensor([[1.3], [-0.4]], dtype=f64); y = torch.tensor([0.7, 0.9], dtype=f64)
    r, w = linreg_risk(X, y)
    x, th = X[:, 0], float(w[0])
    res = y - th * x
    zeta = -(th * x - res) * x.abs().mean() * torch.sign(-res * th) / (x * x).mean()
    center = zeta.mean()
    se = ((zeta - center) ** 2).mean().sqrt() / math.sqrt(2)
    z = 1.959963984540054
    ci = A.aif_confidence_interval(r, 2, method=method)
    assert ci.n == 2 and float(ci.stderr[0]) > 0
    torch.testing.assert_close(ci.center, center.reshape(1), rtol=1e-9, atol=0)
    torch.testing.assert_close(ci.stderr, se.reshape(1), rtol=1e-8, atol=0)
    torch.testing.assert_close(ci.lower, (center - z * se).reshape(1), rtol=1e-8, atol=0)
    torch.testing.assert_close(ci.upper, (center + z * se).reshape(1), rtol=1e-8, atol=0)


def test_ci_chunk_validated():
    with raises(ValueError, 'chunk: must be a positive integer, got 0'):
        A.aif_confidence_interval(mlp_risk(), 2, chunk=0)


# ================================================================ lanczos_steps

@pytest.mark.parametrize('k', [0, -5, 2.5, True, '3', None], ids=['0', '-5', '2.5', 'True', 'str', 'None'])
@pytest.mark.parametrize('fn', ['aif', 'aif_confidence_interval'])
def test_lanczos_steps_refused(fn, k):
    with raises(ValueError, 'lanczos_steps: must be a positive integer'):
        getattr(A, fn)(mlp_risk(), 2, damping='auto', lanczos_steps=k)


def test_lanczos_steps_refused_without_auto_damping():
    "Validated even where it is not used, so a typo never waits for the day damping='auto' is switched on."
    with raises(ValueError, 'lanczos_steps: must be a positive integer, got 0'):
        A.aif(mlp_risk(), 2, lanczos_steps=0)


def test_lanczos_full_steps_damping_matches_eigvalsh():
    """With as many steps as parameters Lanczos is exact: λ = 1.1·(−λ_min(H)) (margin 0.1, residual 0), λ_min from
    eigvalsh of torch.func.hessian; the damped AIF equals the dense solve with H + λI."""
    r = mlp_risk()
    H = dense_hessian(r)
    lmin = float(torch.linalg.eigvalsh(H)[0])
    assert lmin < -0.5
    I, info = A.aif(r, 2, damping='auto', lanczos_steps=r.p)
    assert info.damping_estimate['lanczos_steps'] == r.p
    assert math.isclose(info.damping, 1.1 * -lmin, rel_tol=1e-9)
    # the damped AIF from the independent Hessian and J: −(H + λI)⁻¹ J ΔX with J ΔX = d/dt ∇_w R(X + tΔX) at 0
    dX = info.scale * info.phi
    model, Y = r.model, r.Y
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    def gradw(Xt):
        def R(w):
            prm, i = {}, 0
            for k, s in zip(names, shapes):
                prm[k] = w[i:i + s.numel()].reshape(s); i += s.numel()
            return 0.5 * ((torch.func.functional_call(model, prm, (Xt,)) - Y) ** 2).sum(-1).mean()
        return torch.func.grad(R)(w0)
    _, JdX = torch.func.jvp(gradw, (r.X,), (dX,))
    I_ref = -torch.linalg.solve(H + info.damping * torch.eye(r.p, dtype=f64), JdX)
    torch.testing.assert_close(I, I_ref, rtol=1e-7, atol=1e-9)


# ================================================================ complex inputs

CPLX = torch.complex128


def _cplx(t): return t.to(CPLX) + 1j * torch.ones_like(t)


COMPLEX_CASES = [
    ('lipschitz-dwR', lambda: lipschitz_modulus(torch.tensor([[1, 2j], [0, 1]], dtype=CPLX), torch.eye(2, dtype=CPLX)), 'dwR'),
    ('lipschitz-dxR', lambda: lipschitz_modulus(torch.eye(2, dtype=f64), torch.eye(2, dtype=CPLX)), 'dxR'),
    ('graphical-mu', lambda: graphical_derivative(torch.eye(2, dtype=f64), torch.eye(2, dtype=f64), torch.ones(2, dtype=CPLX)), 'mu'),
    ('coderivative-p', lambda: coderivative(torch.eye(2, dtype=f64), torch.eye(2, dtype=f64), torch.ones(2, dtype=CPLX)), 'p'),
    ('sensitivity-w_eps', lambda: A.model_sensitivity(mlp_risk(), _cplx(mlp_risk().w)), 'w_eps'),
    ('sensitivity-I_hat', lambda: A.model_sensitivity(mlp_risk(), I_hat=_cplx(mlp_risk().w), eps=0.1), 'I_hat'),
    ('sensitivity-w_hat', lambda: A.model_sensitivity(mlp_risk(), w_hat=_cplx(mlp_risk().w)), 'w_hat'),
    ('aif-x0', lambda: A.aif(mlp_risk(), 2, x0=_cplx(mlp_risk().w)), 'x0'),
    ('robust_fit-w0', lambda: RB.robust_fit(mlp_risk(), 0.1, 2, w0=_cplx(mlp_risk().w)), 'w0'),
    ('adversarial_direction', lambda: A.adversarial_direction(_cplx(torch.ones(3, 2, dtype=f64)), 2), 'grad_x'),
    ('ntk-X1', lambda: K.ntk_kernel(_cplx(reg_data()[0])), 'X1'),
    ('kernel_ridge-X', lambda: K.kernel_ridge(_cplx(reg_data()[0]), reg_data()[1], 1e-2), 'X'),
    ('kernel_aif-y', lambda: K.kernel_aif(reg_data()[0], _cplx(reg_data()[1]), 1e-2), 'y'),
    ('kernel_aif-theta', lambda: K.kernel_aif(*reg_data(), 1e-2, theta=_cplx(reg_data()[1])), 'theta'),
    ('dro_weights-c', lambda: D.dro_weights(_cplx(torch.ones(3, dtype=f64)), 2), 'c'),
    ('emp_linear-beta', lambda: D.emp_linear(_cplx(torch.ones(3, dtype=f64)), *reg_data(), 0.1), 'beta'),
    ('dro_linear_regression-beta0', lambda: D.dro_linear_regression(*reg_data(), 0.1, beta0=_cplx(torch.ones(3, dtype=f64))), 'beta0'),
    ('eq6-theta', lambda: C.eq6_sensitivity(C.linear_basis, *reg_data(), theta=_cplx(torch.ones(3, dtype=f64))), 'theta'),
    ('eq6-X_eval', lambda: C.eq6_sensitivity(C.linear_basis, *reg_data(), X_eval=_cplx(reg_data()[0])), 'X_eval'),
]


@pytest.mark.parametrize('call,name', [c[1:] for c in COMPLEX_CASES], ids=[c[0] for c in COMPLEX_CASES])
def test_complex_refused(call, name):
    with pytest.raises(TypeError, match=rf'^{E(name)}: .*complex') as e:
        call()
    assert 'torch.complex128' in str(e.value)


def test_complex_non_hermitian_dwR_used_to_give_a_number():
    "The issue's case: a complex non-Hermitian ∇_wR; its real part alone is a valid input with a checkable modulus."
    A_ = torch.tensor([[1, 2j], [0, 1]], dtype=CPLX)
    with raises(TypeError, 'dwR: expected a real floating dtype, got torch.complex128'):
        lipschitz_modulus(A_, torch.eye(2, dtype=CPLX))
    # real counterpart: identity ∇_wR and ∇_xR = diag(3, 4): κ = ‖∇_wR⁻¹∇_xR‖₂ = 4
    assert math.isclose(lipschitz_modulus(torch.eye(2, dtype=f64), torch.diag(torch.tensor([3., 4.], dtype=f64))), 4., rel_tol=1e-12)


# ================================================================ half precision and meta tensors

HALF_CASES = [
    ('aif-krylov', lambda dt: A.aif(mlp_risk(dt), 2), 'risk'),
    ('aif-dense', lambda dt: A.aif(mlp_risk(dt), 2, method='dense'), 'risk'),
    ('ci', lambda dt: A.aif_confidence_interval(mlp_risk(dt), 2, method='dense'), 'risk'),
    ('robust_fit', lambda dt: RB.robust_fit(mlp_risk(dt), 0.1, 2), 'risk'),
    ('model_sensitivity-risk', lambda dt: A.model_sensitivity(mlp_risk(dt), mlp_risk(dt).w), 'risk_eval'),
    ('model_sensitivity-w_eps', lambda dt: A.model_sensitivity(mlp_risk(), mlp_risk().w.to(dt)), 'w_eps'),
    ('distributional_aif', lambda dt: D.distributional_aif(mlp_risk(dt), 2), 'risk'),
    ('ntk', lambda dt: K.ntk_kernel(reg_data()[0].to(dt)), 'X1'),
    ('kernel_ridge', lambda dt: K.kernel_ridge(reg_data()[0].to(dt), reg_data()[1].to(dt), 1e-2), 'X'),
    ('kernel_ridge-K', lambda dt: K.kernel_ridge(*reg_data(), 1e-2, K=torch.eye(8, dtype=dt)), 'K'),
    ('kernel_aif', lambda dt: K.kernel_aif(reg_data()[0].to(dt), reg_data()[1].to(dt), 1e-2), 'X'),
    ('robust_kernel_ridge', lambda dt: K.robust_kernel_ridge(reg_data()[0].to(dt), reg_data()[1].to(dt), 1e-2, 0.1), 'X'),
    ('emp_linear', lambda dt: D.emp_linear(torch.ones(3, dtype=dt), reg_data()[0].to(dt), reg_data()[1].to(dt), 0.1), 'X'),
    ('emp_inner_pga', lambda dt: D.emp_inner_pga(torch.ones(3, dtype=dt), reg_data()[0].to(dt), reg_data()[1].to(dt), 0.1), 'X'),
    ('dro_linear_regression', lambda dt: D.dro_linear_regression(reg_data()[0].to(dt), reg_data()[1].to(dt), 0.1), 'X'),
    ('eq6', lambda dt: C.eq6_sensitivity(C.linear_basis, reg_data()[0].to(dt), reg_data()[1].to(dt)), 'X'),
]


@pytest.mark.parametrize('dtype', HALF, ids=['float16', 'bfloat16'])
@pytest.mark.parametrize('call,name', [c[1:] for c in HALF_CASES], ids=[c[0] for c in HALF_CASES])
def test_half_precision_refused(call, name, dtype):
    with raises(TypeError, f'{name}: half precision ({dtype}) is not supported'):
        call(dtype)


@pytest.mark.parametrize('dtype', HALF, ids=['float16', 'bfloat16'])
def test_half_precision_elementwise_is_correct(dtype):
    "adversarial_direction and dro_weights are elementwise and accept half precision: checked against formulas in float64."
    G = torch.tensor([[3., -4.], [1., 1.], [0., 2.]], dtype=f64)
    phi = A.adversarial_direction(G.to(dtype), 2)
    assert phi.dtype == dtype
    tol = 2 * torch.finfo(dtype).eps
    torch.testing.assert_close(phi.double(), G / G.norm(dim=1, keepdim=True), rtol=tol, atol=tol)
    c = torch.tensor([3., 1., 2.], dtype=f64)
    w = D.dro_weights(c.to(dtype), 2)        # u = 2: Hölder weights c/‖c‖₂
    torch.testing.assert_close(w.double(), c / c.norm(), rtol=tol, atol=tol)


META_CASES = [
    ('ntk', lambda: K.ntk_kernel(reg_data()[0].to('meta')), 'X1'),
    ('kernel_ridge', lambda: K.kernel_ridge(reg_data()[0].to('meta'), reg_data()[1].to('meta'), 1e-2), 'X'),
    ('kernel_aif-theta', lambda: K.kernel_aif(*reg_data(), 1e-2, theta=reg_data()[1].to('meta')), 'theta'),
    ('dro_linear_regression', lambda: D.dro_linear_regression(reg_data()[0].to('meta'), reg_data()[1].to('meta'), 0.1), 'X'),
    ('emp_linear-beta', lambda: D.emp_linear(torch.ones(3, dtype=f64, device='meta'), *reg_data(), 0.1), 'beta'),
    ('dro_weights', lambda: D.dro_weights(torch.ones(3, dtype=f64, device='meta'), 2), 'c'),
    ('adversarial_direction', lambda: A.adversarial_direction(torch.ones(3, 2, dtype=f64, device='meta'), 2), 'grad_x'),
    ('model_sensitivity-w_eps', lambda: A.model_sensitivity(mlp_risk(), mlp_risk().w.to('meta')), 'w_eps'),
    ('aif-x0', lambda: A.aif(mlp_risk(), 2, x0=mlp_risk().w.to('meta')), 'x0'),
    ('eq6-X', lambda: C.eq6_sensitivity(C.linear_basis, reg_data()[0].to('meta'), reg_data()[1].to('meta')), 'X'),
]


@pytest.mark.parametrize('call,name', [c[1:] for c in META_CASES], ids=[c[0] for c in META_CASES])
def test_meta_refused(call, name):
    with raises(ValueError, f'{name}: is on the meta device'):
        call()


# ================================================================ non-finite values: the user's argument, never the solver's `b`/`A`

def test_aif_x0_checked_at_the_api():
    r = mlp_risk()
    with raises(ValueError, 'x0: contains NaN or Inf'):
        A.aif(r, 2, x0=torch.full((r.p,), math.nan, dtype=f64))
    with raises(ValueError, 'x0, risk.w: different dtypes (torch.float32 vs torch.float64)'):
        A.aif(r, 2, x0=torch.zeros(r.p))
    with raises(ValueError, 'x0: expected shape (13,)'):
        A.aif(r, 2, x0=torch.zeros(3, dtype=f64))


@pytest.mark.parametrize('method', ['krylov', 'dense'])
def test_aif_overflowing_rhs_names_risk_and_scale(method):
    "scale = 1e308: J·ΔX overflows. Krylov used to say 'b: contains NaN or Inf'; dense returned it silently."
    with pytest.raises(ValueError) as e:
        A.aif(mlp_risk(), 2, scale=1e308, method=method)
    msg = str(e.value)
    assert msg.startswith('risk: the right-hand side J·ΔX') and '`scale`' in msg and not msg.startswith('b:')


def test_ci_overflowing_rhs_names_risk():
    for method in ('krylov', 'dense'):
        with raises(ValueError, 'risk: the right-hand side J·ΔX'):
            A.aif_confidence_interval(mlp_risk(), 2, scale=1e308, method=method)


def _kinked_hessian_risk():
    "R(w) = |w₀|^1.5 + ½ mean (xᵀw − y)² at w₀ = 0: finite ∇_x l and J, but ∂²|w₀|^1.5 = ∞ (autograd: NaN/Inf)."
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 2, generator=g, dtype=f64); Y = torch.randn(6, generator=g, dtype=f64)
    fn = lambda prm, X_, Y_: prm['w'][0].abs() ** 1.5 + 0.5 * ((X_ @ prm['w'] - Y_) ** 2).mean()
    return Risk.from_function(fn, {'w': torch.tensor([0., -0.2], dtype=f64)}, X, Y)


@pytest.mark.parametrize('call,msg', [
    (lambda r: A.aif(r, 2), 'risk: the Hessian-vector product H·v returned NaN or Inf'),
    (lambda r: A.aif(r, 2, method='dense'), 'risk: the Hessian ∇²_θ R contains NaN or Inf'),
    (lambda r: A.aif_confidence_interval(r, 2), 'risk: the Hessian-vector product H·v returned NaN or Inf'),
    (lambda r: D.distributional_aif(r, 2), 'risk: the Hessian-vector product H·v returned NaN or Inf'),
], ids=['aif-krylov', 'aif-dense', 'ci', 'distributional_aif'])
def test_nonfinite_hessian_names_risk(call, msg):
    r = _kinked_hessian_risk()
    assert bool(torch.isfinite(r.grad_x()).all())          # the data side is fine: only H is at fault
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        with raises(ValueError, msg):
            call(r)


def test_distributional_aif_nonfinite_input_gradient_names_risk():
    "∇_x of √|x| at x = 0 is NaN: distributional_aif used to pass it on (as `c`, then `b`); now it names the risk."
    X = torch.tensor([[0., 1.], [1., 2.], [2., -1.]], dtype=f64); Y = torch.zeros(3, dtype=f64)
    fn = lambda prm, X_, Y_: (X_.abs().sqrt() @ prm['w']).mean() + 0.5 * (prm['w'] ** 2).sum()
    r = Risk.from_function(fn, {'w': torch.tensor([0.5, -0.3], dtype=f64)}, X, Y)
    with raises(ValueError, 'NaN or Inf'): r.grad_x()   # the risk itself refuses it
    with raises(ValueError, 'risk: the input gradients ∇_x l contain NaN or Inf'):
        D.distributional_aif(r, 2)
    with raises(ValueError, 'risk: the input gradients ∇_x l contain NaN or Inf'):
        A.aif(r, 2)


def test_distributional_aif_overflowing_scale_names_scale():
    with raises(ValueError, 'scale: the attack ΔX = n^(1/u)·scale·w_i·φ_i overflows'):
        D.distributional_aif(mlp_risk(), 2, u=2, scale=1e308)


def test_distributional_aif_still_correct_on_linear_regression():
    """u = ∞ with l = (y − βᵀx)²: w_i = 1, so Î = −H⁻¹ s (1/n) Σ J_i φ_i with H = 2XᵀX/n, J_i = ∂_β∂_x l_i = 2(βx_iᵀ − r_i I),
    φ_i = ∇_x l_i/‖∇_x l_i‖₂ = −sgn(r_i) β/‖β‖ (p = 2), s = mean ‖x_i‖₂ — all written out here."""
    X, y, b, risk = DS._linear_problem(40, 0)
    res = y - X @ b
    s = X.norm(dim=1).mean()
    phi = -torch.sign(res)[:, None] * (b / b.norm())[None, :]
    Jphi = 2 * ((phi @ b)[:, None] * X - res[:, None] * phi)          # J_i φ_i = d/dt ∇_β l(x_i + tφ_i) = 2((βᵀφ_i) x_i − r_i φ_i)
    I_ref = -torch.linalg.solve(2 * X.T @ X / 40, s * Jphi.mean(0))
    I, info = D.distributional_aif(risk, 2, math.inf)
    assert info.converged
    torch.testing.assert_close(I, I_ref, rtol=1e-8, atol=1e-10)


def test_kernel_nonfinite_names_kernel():
    X, y = reg_data()
    bad = lambda X_: K.ntk_kernel(X_) * math.nan
    with raises(ValueError, 'kernel: the Gram matrix contains NaN or Inf'):
        K.kernel_ridge(X, y, 1e-2, bad)
    with raises(ValueError, 'kernel: the Gram matrix contains NaN or Inf'):
        K.kernel_aif(X, y, 1e-2, 2, bad, theta=torch.ones(8, dtype=f64))
    with raises(ValueError, 'kernel: expected an (8, 8) Gram matrix'):
        K.kernel_ridge(X, y, 1e-2, lambda X_: K.ntk_kernel(X_)[:, :3])


def test_kernel_nonfinite_derivative_names_kernel():
    "K = sqrt|XXᵀ| has an infinite derivative where two inputs are orthogonal: named `kernel`, not a NaN result."
    X = torch.tensor([[1., 0.], [0., 1.], [1., 1.], [1., -2.]], dtype=f64)
    y = torch.tensor([1., -1., 0.5, 2.], dtype=f64)
    with pytest.raises(ValueError, match=r'^kernel: .*NaN or Inf'):
        K.kernel_aif(X, y, 1e-2, 2, lambda X_: (X_ @ X_.T).abs().sqrt())


@pytest.mark.parametrize('call,msg', [
    (lambda X, y: D.emp_linear(torch.full((3,), math.nan, dtype=f64), X, y, 0.1), 'beta: contains NaN or Inf'),
    (lambda X, y: D.emp_linear(torch.ones(2, dtype=f64), X, y, 0.1), 'beta: expected shape (3,)'),
    (lambda X, y: D.emp_linear(torch.ones(3, dtype=f64), X, y[:3], 0.1), 'X, y: 8 rows against 3 targets'),
    (lambda X, y: D.emp_inner_pga(torch.ones(3), X, y, 0.1), 'X, beta: different dtypes'),
    (lambda X, y: D.dro_linear_regression(X, y, 0.1, beta0=torch.full((3,), math.inf, dtype=f64)), 'beta0: contains NaN or Inf'),
    (lambda X, y: K.kernel_aif(X, y, 1e-2, theta=torch.full((8,), math.nan, dtype=f64)), 'theta: contains NaN or Inf'),
    (lambda X, y: A.model_sensitivity(mlp_risk(), torch.full((13,), math.nan, dtype=f64)), 'w_eps: contains NaN or Inf'),
    (lambda X, y: CS.example_5_1_sensitivity(X * math.nan, y, X), 'X: contains NaN or Inf'),
], ids=['emp-beta-nan', 'emp-beta-shape', 'emp-rows', 'pga-beta-dtype', 'dro-beta0-inf', 'kernel_aif-theta-nan',
        'sensitivity-w_eps-nan', 'example_5_1-X-nan'])
def test_nonfinite_and_shapes_named(call, msg):
    with raises(ValueError, msg):
        call(*reg_data())
