"""Section 5 closed forms (setsens.cases) against sympy, explicit Hessians, the AIF engine and Monte Carlo (float64, fixed seeds)."""
import math
import numpy as np
import pytest
import sympy as sp
import torch
from setsens.cases import (linear_basis, quadratic_basis, example_5_1_basis, fit_basis_regression, squared_loss, eq6_sensitivity, engine_sensitivity, mean_norm_gaussian, mean_abs_gaussian, theorem_5_2_sensitivity, theorem_5_2_finite_n_term, gamma_ratio_sq, corollary_5_1_sensitivity, corollary_5_1_asymptotic, theorem_5_4_ratio, theorem_5_1_conditions, theorem_5_1_population, theorem_5_3_bound, example_5_1_constants, THEOREM_5_1_REGIMES)
from setsens.cases_study import example_5_1_sensitivity, example_5_1_data, figure_2a, monte_carlo_table, cases_study, mc_power, rise_then_fall

F64 = torch.float64

def gauss(g, *shape): return torch.randn(*shape, generator=g, dtype=F64)

def mc(draw, seeds):
    v = np.array([draw(torch.Generator().manual_seed(s)) for s in seeds])
    return v.mean(), v.std(ddof=1)/math.sqrt(len(v))

def explicit_aif_sensitivity(basis, X, y, Xe, p=2.):
    "Theorem 4.1 with explicit autograd Hessians and mixed Jacobians: an oracle independent of both eq6_sensitivity and the engine."
    n = X.shape[0]
    th = torch.linalg.lstsq(basis(X), y[:, None]).solution[:, 0]
    R = lambda t, Z: ((y - basis(Z) @ t)**2).mean()
    H = torch.autograd.functional.hessian(lambda t: R(t, X), th)
    gx = torch.autograd.functional.jacobian(lambda Z: R(th, Z), X)*n         # per-example ∇_x l (rows)
    q = math.inf if p == 1 else 1. if p == math.inf else p/(p - 1)
    if p == math.inf: phi = torch.sign(gx)
    else: phi = torch.sign(gx)*gx.abs()**(q - 1)/torch.linalg.vector_norm(gx, ord=q, dim=1, keepdim=True)**(q - 1)
    s = torch.linalg.vector_norm(X, ord=p, dim=1).mean()
    mixed = torch.autograd.functional.jacobian(lambda Z: torch.autograd.functional.jacobian(lambda t: R(t, Z), th, create_graph=True), X)
    Phi = torch.einsum('pnm,nm->p', mixed, s*phi)                              # J ΔX with the mean's 1/n
    I = -torch.linalg.solve(H, Phi)
    He = torch.autograd.functional.hessian(lambda t: ((basis(Xe) @ t)**2).mean(), th)
    return float(.5*I @ He @ I)

@pytest.mark.parametrize('basis', [linear_basis, quadratic_basis, example_5_1_basis])
@pytest.mark.parametrize('p', [2., math.inf, 1.5])
def test_eq6_against_explicit_hessians_and_engine(basis, p):
    g = torch.Generator().manual_seed(1)
    X, Xe = gauss(g, 80, 3), gauss(g, 80, 3)
    y = X @ torch.tensor([1., -2., .5], dtype=F64) + X[:, 1]**2 + .3*gauss(g, 80)
    a = eq6_sensitivity(basis, X, y, Xe, p=p)
    assert a == pytest.approx(explicit_aif_sensitivity(basis, X, y, Xe, p), rel=1e-10)
    assert a == pytest.approx(engine_sensitivity(basis, X, y, Xe, y, p=p), rel=1e-8)

def test_eq6_printed_differs_and_misses_the_scale():
    g = torch.Generator().manual_seed(2)
    X, Xe = 3*gauss(g, 500, 2), 3*gauss(g, 500, 2)
    y = X @ torch.tensor([1., 1.], dtype=F64) + gauss(g, 500)
    ours, printed = eq6_sensitivity(linear_basis, X, y, Xe), eq6_sensitivity(linear_basis, X, y, Xe, printed=True)
    assert abs(printed/ours - 1) > .5          # the printed Φ has (θᵀv − y) without |·| and no Ê‖x‖

def test_theorem_5_2_sympy_three_features():
    x = sp.Matrix(sp.symbols('x1:4', real=True)); b = sp.Matrix(sp.symbols('b1:4', real=True))
    yv, e = sp.symbols('y eta', real=True); s, a, S, sx = sp.symbols('s a S sigma_x', positive=True)
    l = (yv - (b.T*x)[0])**2
    mixed = sp.Matrix(3, 3, lambda i, j: sp.diff(sp.diff(l, b[i]), x[j])).subs(yv, e + (b.T*x)[0]).applyfunc(sp.expand)
    term = (mixed*(-s*b/sp.sqrt((b.T*b)[0]))).applyfunc(sp.expand).subs(s*e, a).subs(s, 0)
    I = -(2*sx**2*sp.eye(3)).inv()*(S*term)
    assert sp.simplify((I.T*(2*sx**2*sp.eye(3))*I)[0]/2 - S**2*a**2/sx**2) == 0
    assert theorem_5_2_sensitivity(2., .5, 1.5, eps=.1) == pytest.approx(.01*4*.25/2.25)

def test_theorem_5_2_monte_carlo_with_finite_n_term():
    "Gaussian x, η: simulation mean within 4 SE of the limit (σ_ξ = 1) and of limit + finite-n term (σ_ξ = 0.1)."
    m, sx, n, beta = 4, 1.3, 1500, 2*torch.ones(4, dtype=F64)/2.
    s = mean_norm_gaussian(m, sx)
    for sxi, extra in [(1., False), (.1, True)]:
        def draw(g):
            X, Xe = sx*gauss(g, n, m), sx*gauss(g, n, m)
            return eq6_sensitivity(linear_basis, X, X @ beta + sxi*gauss(g, n), Xe)
        mean, se = mc(draw, range(60))
        closed = theorem_5_2_sensitivity(s, mean_abs_gaussian(sxi), sx) + (theorem_5_2_finite_n_term(s, 2., m, n) if extra else 0.)
        assert abs(mean - closed) < 4*se + .03*closed, (sxi, mean, se, closed)
    # without the finite-n term the σ_ξ = 0.1 case is far off
    assert mean > 1.5*theorem_5_2_sensitivity(s, mean_abs_gaussian(.1), sx)

def test_gamma_ratio_and_asymptotics():
    for m in range(1, 120):
        assert gamma_ratio_sq(m) == pytest.approx(math.gamma((m + 1)/2)**2/math.gamma(m/2)**2, rel=1e-12)
    assert math.isfinite(gamma_ratio_sq(1e6)) and gamma_ratio_sq(1e6)/(1e6/2) == pytest.approx(1, rel=1e-6)
    for m in [20, 100, 1000]:
        assert corollary_5_1_asymptotic(m, 2*m, 1., 1., terms=4) == pytest.approx(corollary_5_1_sensitivity(m, 2*m, 1., 1.), rel=1e-4/m)
    z = sp.Symbol('z', positive=True)      # E‖x‖ for Gaussian x equals the chi mean used inside
    r = sp.Symbol('r', positive=True)
    m = 7
    chi = r**(m - 1)*sp.exp(-r**2/2)/(2**sp.Rational(m - 2, 2)*sp.gamma(sp.Rational(m, 2)))
    assert float(sp.integrate(r*chi, (r, 0, sp.oo))) == pytest.approx(mean_norm_gaussian(m), rel=1e-14)

def test_corollary_5_1_monte_carlo_and_printed_factor():
    M, m, sx, sxi, n = 8, 3, 1.5, 1., 1500
    def draw(g):
        b = gauss(g, M); X, Xe = sx*gauss(g, n, M), sx*gauss(g, n, M)
        return eq6_sensitivity(linear_basis, X[:, :m], X @ b + sxi*gauss(g, n), Xe[:, :m])
    mean, se = mc(draw, range(150))
    ours, printed = corollary_5_1_sensitivity(m, M, sx, sxi), corollary_5_1_sensitivity(m, M, sx, sxi, printed=True)
    assert ours/printed == pytest.approx(sx**2)
    assert abs(mean - ours) < 4*se + .03*ours
    assert abs(mean - printed) > 4*se

def test_theorem_5_4_ratio_monte_carlo():
    m, sx, sr, sxi, n = 4, 1., 1.5, .5, 2000
    beta = 2*torch.ones(m, dtype=F64)/2.
    def draw(g):
        X, Xe = sx*gauss(g, n, m), sx*gauss(g, n, m); y = X @ beta + sxi*gauss(g, n)
        Xt, Xte = X + sr*gauss(g, n, m), Xe + sr*gauss(g, n, m)
        clean = float(X.norm(dim=1).mean())
        S = eq6_sensitivity(linear_basis, X, y, Xe)
        return np.array([eq6_sensitivity(linear_basis, Xt, y, Xte, scale=clean)/S, eq6_sensitivity(linear_basis, Xt, y, Xte)/S])
    v = np.array([draw(torch.Generator().manual_seed(s)) for s in range(50)])
    mean, se = v.mean(0), v.std(0, ddof=1)/math.sqrt(len(v))
    assert abs(mean[0] - theorem_5_4_ratio(sx, sr, sxi, 2.)) < 4*se[0] + .03*mean[0]
    assert abs(mean[1] - theorem_5_4_ratio(sx, sr, sxi, 2., budget='noisy')) < 4*se[1] + .03*mean[1]
    assert abs(mean[0] - theorem_5_4_ratio(sx, sr, sxi, 2., printed=True)) > 4*se[0]
    # sympy: the variance of the smoothed residual, which fixes the factor 1 (not 2)
    a, r, b, xi = sp.symbols('sigma_x sigma_r beta xi', positive=True)
    att = a**2/(a**2 + r**2)
    assert sp.simplify(xi**2 + b**2*((1 - att)**2*a**2 + att**2*r**2) - (xi**2 + b**2*a**2*r**2/(a**2 + r**2))) == 0

def test_theorem_5_1_population_and_regimes():
    SL, SQ = theorem_5_1_population([1., .5, -.3], [0., 0., 0.], 1.3, .7)
    assert SL == pytest.approx(SQ, rel=1e-12)
    assert SL == pytest.approx(mean_norm_gaussian(3, 1.3)**2*(2/math.pi)*.49/1.69, rel=1e-12)
    b1, b2, sx, sxi = THEOREM_5_1_REGIMES['II (counterexample)']
    c = theorem_5_1_conditions(b1, b2, sx, sxi)
    assert c['II'] and not c['I']
    SL, SQ = theorem_5_1_population(b1, b2, sx, sxi)
    assert SL > 2*SQ                                                  # condition II's conclusion fails in the population
    n = 4000                                                          # simulation agrees with the quadrature for 𝓛
    def draw(g):
        X, Xe = sx*gauss(g, n, 5), sx*gauss(g, n, 5)
        return eq6_sensitivity(linear_basis, X, X @ b1 + (X @ b2)**2 + sxi*gauss(g, n), Xe)
    mean, se = mc(draw, range(30))
    assert abs(mean - SL) < 4*se + .03*SL
    for k, (b1, b2, sx, sxi) in THEOREM_5_1_REGIMES.items():
        c = theorem_5_1_conditions(b1, b2, sx, sxi)
        SL, SQ = theorem_5_1_population(b1, b2, sx, sxi)
        if c['I']: assert SL > SQ
    assert theorem_5_1_conditions(*THEOREM_5_1_REGIMES['II'])['II']
    assert theorem_5_1_population(*THEOREM_5_1_REGIMES['II'])[0] < theorem_5_1_population(*THEOREM_5_1_REGIMES['II'])[1]

def test_theorem_5_1_population_quadrature_vs_large_sample():
    "The quadrature for 𝓠 against eq. 6 on one large sample (n = 200000): within 2%."
    b1, b2, sx, sxi = torch.tensor([.7, -.4], dtype=F64), torch.tensor([.5, .3], dtype=F64), 1., 1.
    SL, SQ = theorem_5_1_population(b1, b2, sx, sxi)
    g = torch.Generator().manual_seed(0)
    X, Xe = gauss(g, 200000, 2), gauss(g, 200000, 2)
    y = X @ b1 + (X @ b2)**2 + gauss(g, 200000)
    assert eq6_sensitivity(quadratic_basis, X, y, Xe) == pytest.approx(SQ, rel=.02)
    assert eq6_sensitivity(linear_basis, X, y, Xe) == pytest.approx(SL, rel=.02)

def test_example_5_1_constants_and_bound():
    g = torch.Generator().manual_seed(0)
    for m in [1, 3, 6]:
        X = 2*torch.rand(400000, m, generator=g, dtype=F64) - 1
        V = example_5_1_basis(X)
        c = example_5_1_constants(m)
        assert torch.linalg.eigvalsh(V.T @ V/len(V))[0].item() == pytest.approx(c['lambda_min'], rel=1.5e-2)  # sample minimum of m−1 equal eigenvalues: biased low
        assert (1 + (X**2/4).amax(1)).mean().item() == pytest.approx(c['mean_jtj_norm'], rel=2e-3)
    u = sp.Symbol('u')
    assert sp.integrate(u**4/2, (u, -1, 1))/16 - sp.integrate(u**2/2, (u, -1, 1))**2/16 == sp.Rational(1, 180)
    f = figure_2a(n=2000, M=6, reps=200)
    assert (f['S'] <= f['bound']).all()
    sh = rise_then_fall(f['values'])                       # paired over repetitions: not an argmax of a few draws
    assert sh['z_first_step'] > 3 and sh['z_rise'] > 3 and sh['z_fall'] > 3, sh
    X, y, Xe, _ = example_5_1_data(torch.Generator().manual_seed(4), 1000, 5, .1)
    q = example_5_1_sensitivity(X[:, :3], y, Xe[:, :3])
    assert q['S'] == pytest.approx(eq6_sensitivity(example_5_1_basis, X[:, :3], y, Xe[:, :3]), rel=1e-10)
    assert theorem_5_3_bound(2., .5, 1.1, .3, eps=.1) == pytest.approx(.01*4*1.1*.3/.5)

def test_monte_carlo_table_engine_equals_closed_form():
    a = monte_carlo_table(1, n=400, n_quad=800, simulator='engine')
    b = monte_carlo_table(1, n=400, n_quad=800, simulator='closed')
    assert len(a) == len(b) and all(r['sim'] == pytest.approx(q['sim'], rel=1e-8) for r, q in zip(a, b))

def test_cases_study_quick():
    res = cases_study(quick=True)
    assert res[0].within and len(res) > 10
    assert all(math.isfinite(float(r.ours)) for r in res)
    mc = [r for r in res if r.se is not None]
    assert len(mc) == 17 and all(r.kind in ('simulation', 'claim') and r.n_se == 3 and r.rtol is None for r in mc)
    # no row that our own note calls wrong is counted as agreeing; our own formulas agree within 3 SE
    wrong = [r for r in mc if 'printed form, wrong' in r.note]
    assert len(wrong) == 3 and not any(r.within for r in wrong)
    assert all(r.within for r in mc if 'derived form' in r.note or 'form, confirmed' in r.note)
    # power: each wrong form lies at least 6 SE from the right one, so the 3-SE test rejects it
    assert all(float(r.note.split('expected to differ; ')[1].split(' SE')[0]) >= 6 for r in wrong)

def test_mc_power_and_shape_helpers():
    rows = [dict(case='c', formula='right', closed=1.0, se=.1, check='match'),
            dict(case='c', formula='wrong', closed=1.5, se=.1, check='differ')]
    assert mc_power(rows) == {'c: wrong': pytest.approx(5.)}
    v = np.array([[1., 2., 1.5], [1.1, 2.2, 1.4], [0.9, 1.9, 1.6]])
    sh = rise_then_fall(v)
    assert sh['argmax'] == 2 and sh['z_rise'] > 3 and sh['z_fall'] > 3
    with pytest.raises(ValueError, match='values'): rise_then_fall(np.ones(3))

def test_bad_inputs():
    with pytest.raises(ValueError, match='m'): corollary_5_1_sensitivity(11, 10, 1., 1.)
    with pytest.raises(ValueError, match='sigma_x'): theorem_5_2_sensitivity(1., 1., -1.)
    with pytest.raises(ValueError, match='budget'): theorem_5_4_ratio(1., 1., 1., 1., budget='x')
    with pytest.raises(ValueError, match='beta1, beta2'): theorem_5_1_population([1., 2.], [1.], 1., 1.)
    X = torch.randn(10, 2, dtype=F64)
    with pytest.raises(ValueError, match='X, y'): eq6_sensitivity(linear_basis, X, torch.randn(9, dtype=F64))
    with pytest.raises(TypeError, match='X'): eq6_sensitivity(linear_basis, X.numpy(), torch.randn(10, dtype=F64))
    with pytest.raises(ValueError, match='simulator'): monte_carlo_table(1, simulator='other')
    with pytest.raises(ValueError, match='m'): example_5_1_constants(0)
