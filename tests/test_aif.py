"Float64 oracles for `setsens.aif`: Hölder maximisers, finite differences of the exact robust optimum, explicit Hessians, bad input."
import math, warnings
import pytest
import torch
from torch import nn
from hypothesis import given, settings, strategies as st
from setsens.risk import Risk
from setsens.aif import adversarial_direction, aif, model_sensitivity, aif_confidence_interval, _project_lp
from setsens.robust import robust_fit, linreg_data as _linreg_data, linreg_risk as _linreg_risk



pytestmark = pytest.mark.usefixtures('float64_module')   # tests/conftest.py

PS = [1, 1.5, 2, 3, math.inf]


def conj(p): return math.inf if p == 1 else 1. if p == math.inf else p / (p - 1)


def dual_norm(G, p):
    "‖G_i‖_q row-wise, q the conjugate of p, scaled by the largest entry first (q near 10¹⁶ for p → 1 overflows otherwise)."
    m = G.abs().amax(1, keepdim=True).clamp_min(torch.finfo(G.dtype).tiny)
    return m[:, 0] * torch.linalg.vector_norm(G / m, ord=conj(p), dim=1)


def linreg(n=200, beta=(2., -3.4), seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, len(beta), generator=g)
    y = X @ torch.tensor(beta) + (0.5 if bias else 0.) + 0.1 * torch.randn(n, generator=g)
    m = nn.Linear(len(beta), 1, bias=bias)
    Xb = torch.cat([X, torch.ones(n, 1)], 1) if bias else X
    w = torch.linalg.lstsq(Xb, y[:, None]).solution[:, 0]
    with torch.no_grad():
        m.weight.copy_(w[None, :len(beta)])
        if bias: m.bias.copy_(w[-1:])
    return Risk(m, "mse", X, y[:, None]), X, y


# -- the adversarial direction ---------------------------------------------------------------------
@pytest.mark.parametrize("p", PS)
def test_direction_unit_norm_and_maximises_the_linearised_loss(p):
    g = torch.Generator().manual_seed(1)
    G = torch.randn(8, 5, generator=g)
    phi = adversarial_direction(G, p)
    torch.testing.assert_close(torch.linalg.vector_norm(phi, ord=p, dim=1), torch.ones(8), rtol=0, atol=1e-12)
    torch.testing.assert_close((G * phi).sum(1), torch.linalg.vector_norm(G, ord=conj(p), dim=1), rtol=0, atol=1e-12)
    U = torch.randn(40_000, 5, generator=g)
    U = U / torch.linalg.vector_norm(U, ord=p, dim=1, keepdim=True)      # random unit vectors: never better
    assert bool(((G @ U.T).max(1).values <= (G * phi).sum(1) + 1e-12).all())


@settings(max_examples=30, deadline=None)
@given(p=st.floats(1.0, 50.0), seed=st.integers(0, 10_000))
def test_direction_property(p, seed):
    G = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
    phi = adversarial_direction(G, p)
    assert torch.allclose(torch.linalg.vector_norm(phi, ord=p, dim=1), torch.ones(3), atol=1e-10)
    assert torch.allclose((G * phi).sum(1), dual_norm(G, p), rtol=1e-10, atol=1e-12)


def test_direction_ties_zero_rows_and_shapes():
    phi = adversarial_direction(torch.tensor([[3., -3., 1.], [0., 0., 0.], [0., 2., 0.]]), 1)
    torch.testing.assert_close(phi, torch.tensor([[.5, -.5, 0.], [0., 0., 0.], [0., 1., 0.]]))
    assert adversarial_direction(torch.zeros(4, 3), 2).abs().sum() == 0          # ∇_x l = 0 → φ = 0
    torch.testing.assert_close(adversarial_direction(torch.tensor([[0., -2.]]), math.inf), torch.tensor([[0., -1.]]))
    G = torch.randn(2, 3, 4, 5)
    assert adversarial_direction(G, 2).shape == G.shape
    torch.testing.assert_close(adversarial_direction(G, 2).reshape(2, -1), adversarial_direction(G.reshape(2, -1), 2))
    for s in ('inf', 'Infinity'): torch.testing.assert_close(adversarial_direction(G, s), torch.sign(G))


@pytest.mark.parametrize("p", [0.5, 0., -1., float('nan'), 'two'])
def test_direction_bad_p(p):
    with pytest.raises(ValueError, match='p'): adversarial_direction(torch.randn(2, 3), p)


def test_direction_bad_grad():
    with pytest.raises(TypeError, match='grad_x'): adversarial_direction([[1., 2.]], 2)
    with pytest.raises(ValueError, match='grad_x'): adversarial_direction(torch.tensor([[float('nan'), 1.]]), 2)
    with pytest.raises(TypeError, match='p'): adversarial_direction(torch.randn(2, 2), True)


# -- the AIF against finite differences of the exact robust optimum -------------------------------
@pytest.mark.parametrize("p", [1, 2, 3, math.inf])
def test_aif_matches_finite_differences_of_exact_robust_optimum(p):
    risk, X, y = linreg()
    I, info = aif(risk, p)
    assert info.converged and len(info.zero_grad) == 0
    errs = []
    for eps in (1e-4, 1e-5, 1e-6):
        w, fi = robust_fit(risk, eps, p, method='exact')
        assert fi.converged
        errs.append(float(((w - risk.w) / eps - I).norm()))
    assert errs[2] < 1e-4 * float(I.norm()) + 1e-5
    assert errs[0] / errs[1] == pytest.approx(10, rel=0.05) and errs[1] / errs[2] == pytest.approx(10, rel=0.05)   # O(ε)


@pytest.mark.parametrize("p", [2, math.inf])
def test_aif_with_intercept_matches_finite_differences(p):
    risk, X, y = linreg(bias=True)
    I, _ = aif(risk, p)
    w, fi = robust_fit(risk, 1e-6, p, method='exact')
    assert fi.converged
    torch.testing.assert_close((w - risk.w) / 1e-6, I, rtol=0, atol=1e-4)


def test_aif_closed_form_with_explicit_hessian():
    "Î = −H⁻¹Φ with H from torch.autograd.functional.hessian and Φ from an explicit mixed derivative."
    risk, X, y = linreg(n=50)
    w = risk.w.clone()
    R = lambda w, X: 0.5 * ((y - X @ w) ** 2).mean()
    H = torch.autograd.functional.hessian(lambda w: R(w, X), w)
    for p in (2, math.inf, 3):
        gx = torch.autograd.functional.jacobian(lambda X: R(w, X), X) * len(y)
        dX = torch.linalg.vector_norm(X, ord=p, dim=1).mean() * adversarial_direction(gx, p)
        Phi = torch.autograd.functional.jvp(lambda t: torch.autograd.functional.jacobian(lambda w: R(w, X + t * dX), w, create_graph=True),
                                            torch.zeros(()), torch.ones(()), create_graph=False)[1]
        torch.testing.assert_close(aif(risk, p)[0], -torch.linalg.solve(H, Phi), rtol=0, atol=1e-12)


# -- Krylov path = dense path (a nonlinear model) --------------------------------------------------
def small_mlp(seed=0, n=60):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g)
    Y = torch.randint(0, 3, (n,), generator=g)
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    return Risk(m, 'cross_entropy', X, Y)


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_krylov_equals_dense_and_explicit_hessian(p):
    risk = small_mlp()
    lam = 0.3                                   # at a random point H is indefinite: damp it
    Ik, ik = aif(risk, p, damping=lam)
    Id, _ = aif(risk, p, damping=lam, method='dense')
    torch.testing.assert_close(Ik, Id, rtol=0, atol=1e-8 * float(Id.norm()))
    # independent oracle: the Hessian from torch.autograd.functional.hessian on a functional_call loss
    names = risk.names
    def R(w):
        prm = risk.unflatten(w)
        return nn.functional.cross_entropy(torch.func.functional_call(risk.model, prm, (risk.X,)), risk.Y)
    H = torch.autograd.functional.hessian(R, risk.w.clone())
    Phi = risk.jx(ik.scale * ik.phi)
    torch.testing.assert_close(Id, -torch.linalg.solve(H + lam * torch.eye(risk.p), Phi), rtol=0, atol=1e-9)


def test_auto_damping_from_lanczos():
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g))
    A = Q @ torch.diag(torch.linspace(-0.5, 3., 20)) @ Q.T
    B = torch.randn(20, 2, generator=g)
    r = Risk.from_function(lambda prm, X, Y: 0.5 * prm['w'] @ A @ prm['w'] + (prm['w'] @ B @ X.T).mean(),
                           {'w': torch.randn(20, generator=g)}, torch.randn(30, 2, generator=g))
    I, info = aif(r, 2, damping='auto')
    assert info.damping_estimate['ritz_min'] == pytest.approx(-0.5, abs=1e-8)
    assert info.damping == pytest.approx(0.55, rel=1e-6)
    torch.testing.assert_close(I, aif(r, 2, damping=0.55, method='dense')[0], rtol=0, atol=1e-8)
    assert aif(r, 2, damping=None)[1].damping == 0.


# -- model sensitivity and Remark 2's interval -------------------------------------------------------
def test_model_sensitivity_terms():
    risk, X, y = linreg()
    w, _ = robust_fit(risk, 1e-2, 2, method='exact')
    I, _ = aif(risk, 2)
    H = X.T @ X / len(y)
    s = model_sensitivity(risk, w, I_hat=I, eps=1e-2)
    dw = w - risk.w
    assert s.quadratic == pytest.approx(float(0.5 * dw @ H @ dw), rel=1e-12)
    assert s.empirical == pytest.approx(s.quadratic, rel=1e-9) and abs(s.linear) < 1e-15
    assert s.aif == pytest.approx(float(0.5 * 1e-4 * I @ H @ I), rel=1e-12)
    Xe, ye = _linreg_data(300, generator=torch.Generator().manual_seed(9))
    se = model_sensitivity(_linreg_risk(Xe, ye, risk.w), w)
    assert se.empirical == pytest.approx(se.linear + se.quadratic, rel=1e-10) and se.aif is None
    with pytest.raises(ValueError, match='eps'): model_sensitivity(risk, w, I_hat=I)
    with pytest.raises(ValueError, match='eps'): model_sensitivity(risk, w, I_hat=I, eps=-1.)
    with pytest.raises(ValueError, match='w_eps'): model_sensitivity(risk, torch.zeros(3))


def test_confidence_interval_zeta_closed_form():
    risk, X, y = linreg()
    for p in (2, math.inf):
        ci = aif_confidence_interval(risk, p, return_zeta=True, chunk=37)
        cd = aif_confidence_interval(risk, p, method='dense')
        I, _ = aif(risk, p)
        torch.testing.assert_close(ci.center, I, rtol=0, atol=1e-8)
        torch.testing.assert_close(ci.stderr, cd.stderr, rtol=1e-8, atol=0)
        w, r = risk.w, y - X @ risk.w
        s = torch.linalg.vector_norm(X, ord=p, dim=1).mean()
        V = s * (-torch.sign(r)[:, None] * torch.linalg.vector_norm(w, ord=conj(p)) * X
                 + r.abs()[:, None] * adversarial_direction(w[None], p))
        Z = -torch.linalg.solve(X.T @ X / len(y), V.T).T
        torch.testing.assert_close(ci.zeta, Z, rtol=0, atol=1e-8)
        torch.testing.assert_close(cd.cov, torch.cov(Z.T, correction=0), rtol=0, atol=1e-11)
        torch.testing.assert_close(ci.cov, torch.cov(Z.T, correction=0), rtol=0, atol=1e-7)
        assert bool(ci.covers(ci.center).all()) and ci.wald(ci.center) == pytest.approx(0, abs=1e-20)
        z = 1.959963984540054
        torch.testing.assert_close(ci.upper - ci.center, z * Z.std(0, correction=0) / math.sqrt(len(y)), rtol=1e-8, atol=0)
    with pytest.raises(ValueError, match='level'): aif_confidence_interval(risk, 2, level=1.5)


# -- the robust optimiser ------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, math.inf, 1])
def test_exact_robust_optimum_is_a_global_minimum(p):
    "At ε = 0.1 the optimum sits on kinks; the convex objective must not be lower anywhere nearby."
    risk, X, y = linreg()
    w, fi = robust_fit(risk, 0.1, p, method='exact')
    assert fi.converged and fi.pinned >= 1
    rho, q = fi.radius, conj(p)
    F = lambda W: 0.5 * (((y[None] - W @ X.T).abs() + rho * torch.linalg.vector_norm(W, ord=q, dim=1, keepdim=True)) ** 2).mean(1)
    g = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1e-6, 1e-9):
        W = w[None] + scale * torch.randn(4000, 2, generator=g)
        assert bool((F(W) >= F(w[None]) - 1e-16).all())
    assert fi.objective == pytest.approx(float(F(w[None])), rel=1e-14)


def test_exact_inner_maximum_matches_pgd_at_fixed_parameters():
    from setsens.robust import _pgd
    risk, X, y = linreg()
    w, fi = robust_fit(risk, 0.05, 2, method='exact')
    d = _pgd(risk, w, X, torch.zeros_like(X), fi.radius, 2, 10, 0.25 * fi.radius)
    ok = (y - X @ w).abs() > 1e-12                       # rows with r = 0 have two maximisers
    torch.testing.assert_close(d[ok], fi.delta[ok], rtol=0, atol=1e-12)


def test_pgd_robust_fit_agrees_with_exact():
    risk, X, y = linreg()
    we, _ = robust_fit(risk, 1e-2, 2, method='exact')
    wp, ip = robust_fit(risk, 1e-2, 2)
    torch.testing.assert_close(wp, we, rtol=0, atol=1e-7)
    w0, i0 = robust_fit(risk, 0., 2)                    # ε = 0: the standard minimiser
    torch.testing.assert_close(w0, risk.w, rtol=0, atol=1e-10)


def test_project_lp():
    g = torch.Generator().manual_seed(0)
    D = 3 * torch.randn(50, 6, generator=g)
    for p in (1, 2, 3, math.inf):
        P = _project_lp(D, 0.7, p)
        assert bool((torch.linalg.vector_norm(P, ord=p, dim=1) <= 0.7 + 1e-12).all())
        torch.testing.assert_close(_project_lp(0.01 * D / D.abs().max(), 0.7, p), 0.01 * D / D.abs().max())
    # l1: the Euclidean projection's optimality — P = sign(d)·max(|d| − τ, 0) with ‖P‖₁ = ρ
    P = _project_lp(D, 0.7, 1)
    for d, pr in zip(D, P):
        tau = float((d.abs() - pr.abs())[pr != 0].mean())
        torch.testing.assert_close(pr, torch.sign(d) * (d.abs() - tau).clamp_min(0), rtol=0, atol=1e-12)


# -- bad input and documented edge cases ---------------------------------------------------------------
def test_bad_input():
    risk, X, y = linreg()
    with pytest.raises(ValueError, match='p'): aif(risk, 0.5)
    with pytest.raises(ValueError, match='p'): robust_fit(risk, 0.1, float('nan'))
    with pytest.raises(ValueError, match='eps'): robust_fit(risk, -0.1, 2)
    with pytest.raises(ValueError, match='eps'): robust_fit(risk, float('inf'), 2)
    with pytest.raises(ValueError, match='damping'): aif(risk, 2, damping=-1e-3)
    with pytest.raises(ValueError, match='damping'): aif(risk, 2, damping='lots')
    with pytest.raises(ValueError, match='method'): aif(risk, 2, method='cg')
    with pytest.raises(ValueError, match='scale'): aif(risk, 2, scale=-1.)
    with pytest.raises(ValueError, match='method'): robust_fit(risk, 0.1, 2, method='newton')
    with pytest.raises(ValueError, match='w0'): robust_fit(risk, 0.1, 2, w0=torch.zeros(5))
    Xn = X.clone(); Xn[3, 0] = float('nan')
    with pytest.raises(ValueError, match='X'): Risk(nn.Linear(2, 1, bias=False), "mse", Xn, y[:, None])
    mlp = Risk(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), "mse", X, y[:, None])
    with pytest.raises(ValueError, match='linear regression'): robust_fit(mlp, 0.1, 2, method='exact')


def test_zero_gradient_points_are_reported():
    risk, X, y = linreg()
    X0 = torch.cat([X, torch.tensor([[1., 0.]])]); y0 = torch.cat([y, risk.w[:1]])   # residual exactly 0
    r0 = _linreg_risk(X0, y0, risk.w)
    with pytest.warns(RuntimeWarning, match='∇_x l = 0'):
        I0, info = aif(r0, 2)
    assert info.zero_grad.tolist() == [len(y)] and info.phi[-1].abs().sum() == 0
    assert bool(torch.isfinite(I0).all())              # documented: the point contributes nothing
    with pytest.warns(RuntimeWarning, match='∇_x l = 0'):      # zero_tol: tiny gradients count as zero too
        _, info2 = aif(r0, 2, zero_tol=1e-2)
    assert len(info2.zero_grad) > 1


def test_not_converged_is_reported():
    risk, X, y = linreg()
    with pytest.warns(RuntimeWarning, match='not converged'):
        _, info = robust_fit(risk, 0.1, 2, outer='gd', lr=1e-3, max_iter=2)
    assert not info.converged and info.grad_norm > 0

def test_blobs_mlp_weights_do_not_depend_on_the_default_dtype():
    "The notebook (float64 default) and the CLI (float32 default) must train the same network: weights drawn in float64."
    from setsens.aif_study import _blobs_mlp
    old = torch.get_default_dtype()
    try:
        built = {}
        for dt in (torch.float32, torch.float64):
            torch.set_default_dtype(dt)
            built[dt] = _blobs_mlp()
    finally:
        torch.set_default_dtype(old)
    r32, r64 = built[torch.float32], built[torch.float64]
    assert r32.dtype == r64.dtype == torch.float64
    assert torch.equal(r32.w, r64.w) and torch.equal(r32.X, r64.X) and torch.equal(r32.Y, r64.Y)
    # the old construction (float32 draw, then .to(float64)) gives other weights: the test can tell them apart
    torch.manual_seed(0)
    old_first = nn.Linear(2, 8, dtype=torch.float32).weight.double()
    assert not torch.equal(old_first.reshape(-1), r64.w[:16])


def _sharded_zero_tol(rank, world, sizes):
    "aif with zero_tol on rank `rank`'s shard of a linear regression: the threshold must use the largest gradient of every shard."
    from setsens.distributed import DistributedRisk, shard
    from setsens.robust import linreg_data as _linreg_data, linreg_risk as _linreg_risk
    X, y = _linreg_data(30, generator=torch.Generator().manual_seed(3))
    w = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    dr = DistributedRisk(_linreg_risk(shard(X, rank, world, sizes), shard(y, rank, world, sizes), w))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        I, info = aif(dr, 2, zero_tol=0.5, method='dense')
    return dict(I=I, zero=torch.tensor(len(info.zero_grad)))

def test_zero_tol_is_relative_to_the_largest_gradient_of_every_shard():
    from setsens.distributed import spawn_loopback
    from setsens.robust import linreg_data as _linreg_data, linreg_risk as _linreg_risk
    X, y = _linreg_data(30, generator=torch.Generator().manual_seed(3))
    risk = _linreg_risk(X, y)
    r = (y - X @ risk.w).abs()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        I, info = aif(risk, 2, zero_tol=0.5, method='dense')
    # by hand: ∇_x l_i = −r_i θ, so ‖∇_x l_i‖_∞ ≤ ½ max_j ‖∇_x l_j‖_∞ exactly when |r_i| ≤ ½ max_j |r_j|
    assert set(info.zero_grad.tolist()) == set(torch.nonzero(r <= 0.5*r.max()).flatten().tolist())
    glob = r <= 0.5*r.max()
    def local_rule(k):                                   # the threshold from each rank's own largest gradient (the bug)
        return torch.cat([r[:k] <= 0.5*r[:k].max(), r[k:] <= 0.5*r[k:].max()])
    k = next(k for k in range(2, 29) if not torch.equal(local_rule(k), glob))   # a split where the two rules differ
    sizes = [k, 30 - k]
    multi = spawn_loopback(_sharded_zero_tol, 2, sizes)
    torch.testing.assert_close(multi['I'], I, rtol=1e-10, atol=1e-12)
