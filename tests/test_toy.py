"The toy example (eq. 16) against values derived by hand (see nbs/20_toy.ipynb for the derivation; the study in nbs/25_toy_study.ipynb)."
import math
import pytest
import sympy as sp
import torch
from setsens.toy import (toy_data, toy_loss, toy_derivatives, toy_solution_constant, toy_symbolic,
                         hyperbola_distance)
from setsens.toy_study import toy_analysis, toy_results, toy_study
from setsens.graphical import graphical_derivative, coderivative, lipschitz_modulus

f64 = torch.float64
T = lambda *v: torch.tensor(v, dtype=f64)

# By hand: with s = w1 w2, g = ∇s(w̄) = (2, 1), at zero residual
#   ∇_wR = (Σ x_i²) g gᵀ = 5 g gᵀ,   ∇_xR = [s x_i g]_i = 2 g x̄ᵀ,
#   A†B = g x̄ᵀ / 12.5  ⇒  κ = ‖g‖‖x̄‖/12.5 = 5/12.5 = 0.4,
#   DS(Δx): 5 (gᵀv) g = −2 g (x̄ᵀΔx) = 2 g  ⇒  2 v1 + v2 = 0.4,  min-norm point 0.4 g/5 = (0.16, 0.08),
#   c(x) = Σ y x / Σ x² = 2/(1 − 0.2) = 2.5 at x^p = 0.8 x̄,
#   risk on x^p: 1.6 (2.5 − w1 w2)²  (so 1.6·0.25 = 0.4 at w̄).
H_HAND = T(20., 10., 10., 5.).reshape(2, 2)
J_HAND = T(4., 8., 2., 4.).reshape(2, 2)


def test_derivatives_match_hand_values():
    A, B = toy_derivatives()
    torch.testing.assert_close(A, H_HAND, rtol=0, atol=1e-12)
    torch.testing.assert_close(B, J_HAND, rtol=0, atol=1e-12)
    Am, Bm = toy_derivatives(reduction='mean')
    torch.testing.assert_close(Am, H_HAND / 2); torch.testing.assert_close(Bm, J_HAND / 2)


def test_derivatives_vs_finite_differences():
    xbar, y, wbar, _ = toy_data()
    Rf = lambda w, x: torch.func.grad(lambda w: toy_loss(w, x, y))(w)
    h = 1e-6
    A_fd = torch.stack([(Rf(wbar + h * e, xbar) - Rf(wbar - h * e, xbar)) / (2 * h) for e in torch.eye(2, dtype=f64)], 1)
    B_fd = torch.stack([(Rf(wbar, xbar + h * e) - Rf(wbar, xbar - h * e)) / (2 * h) for e in torch.eye(2, dtype=f64)], 1)
    torch.testing.assert_close(A_fd, H_HAND, rtol=0, atol=1e-6)
    torch.testing.assert_close(B_fd, J_HAND, rtol=0, atol=1e-6)


def test_symbolic():
    s = toy_symbolic()
    assert s['dwR'] == sp.Matrix([[20, 10], [10, 5]]) and s['dxR'] == sp.Matrix([[4, 8], [2, 4]])
    assert (s['rank_dwR'], s['rank_dxR'], s['rank_AB']) == (1, 1, 1)      # Assumption 2 fails
    assert s['kappa'] == sp.Rational(2, 5)
    assert s['c_bar'] == 2 and s['c_p'] == sp.Rational(5, 2)
    assert s['gd_point'] == sp.Matrix([sp.Rational(4, 25), sp.Rational(2, 25)])


def test_graphical_objects():
    xbar, y, wbar, dx = toy_data()
    A, B = toy_derivatives()
    D = graphical_derivative(A, B, dx)
    torch.testing.assert_close(D.point, T(0.16, 0.08), rtol=0, atol=1e-12)
    assert D.dim == 1 and abs(abs(float(D.basis[:, 0] @ T(1., -2.))) - math.sqrt(5)) < 1e-12
    for v1 in [-1., 0., 0.3]:                                       # the line 2 v1 + v2 = 0.4
        assert bool(D.contains(T(v1, 0.4 - 2 * v1)))
    assert not bool(D.contains(T(0., 0.5)))
    q = coderivative(A, B, T(2., 1.))                               # D*S(t(2,1)) = {−0.4 t (1, 2)}
    torch.testing.assert_close(q.point, T(-0.4, -0.8), rtol=0, atol=1e-12)
    with pytest.warns(RuntimeWarning):
        assert coderivative(A, B, T(1., -2.)) is None
    assert abs(lipschitz_modulus(A, B) - 0.4) < 1e-12


def test_solution_constant_and_distance():
    xbar, y, wbar, dx = toy_data()
    assert abs(float(toy_solution_constant(xbar)) - 2) < 1e-15
    assert abs(float(toy_solution_constant(xbar + dx)) - 2.5) < 1e-14
    # brute force: dense parametrisation of the curve (both branches)
    u = torch.cat([torch.linspace(0.05, 8, 400001, dtype=f64), -torch.linspace(0.05, 8, 400001, dtype=f64)])
    curve = torch.stack([u, 2.5 / u], 1)
    pts = T(1., 2., -1., 0.5, 0.2, 3., 2., -2., 0., 0., 1.5811, 1.5811).reshape(-1, 2)
    d, near = hyperbola_distance(pts, 2.5)
    brute = torch.cdist(pts, curve).min(1).values
    torch.testing.assert_close(d, brute, rtol=0, atol=1e-4)
    assert bool((d <= brute + 1e-12).all())
    torch.testing.assert_close(near[:, 0] * near[:, 1], torch.full((6,), 2.5, dtype=f64))
    # the Lagrange point by hand-checked optimality: w − w̄ ∥ ∇(w1 w2) = (w2, w1)
    dn, wn = hyperbola_distance(wbar, 2.5)
    r = wn - wbar
    assert abs(float(r[0] * wn[0] - r[1] * wn[1])) < 1e-12
    with pytest.raises(ValueError, match='c'):
        hyperbola_distance(wbar, -1.)


def test_risk_values():
    xbar, y, wbar, dx = toy_data()
    xp = xbar + dx
    assert abs(float(toy_loss(wbar, xp)) - 0.4) < 1e-14
    assert abs(float(toy_loss(wbar, xp, reduction='mean')) - 0.2) < 1e-14
    w = T(1.16, 2.08)
    assert abs(float(toy_loss(w, xp)) - 1.6 * (2.5 - 1.16 * 2.08) ** 2) < 1e-14
    W = torch.rand(3, 4, 2, dtype=f64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(toy_loss(W, xp), 1.6 * (2.5 - W[..., 0] * W[..., 1]) ** 2)


def test_analysis_table():
    a = toy_analysis()
    assert abs(a['kappa'] - 0.4) < 1e-12
    assert abs(a['radius'] - 0.4 / math.sqrt(5)) < 1e-12
    st = a['stability']
    assert abs(st.distance - 0.4 / math.sqrt(5)) < 1e-12
    assert st.samples.shape == (5, 2) and st.min_sample_distance >= 0.4 / math.sqrt(5) - 1e-12
    assert float(st.sample_distances.max()) <= 0.2 + 1e-12
    # samples lie on 2 v1 + v2 = 0.4 around w̄
    v = st.samples - T(1., 2.)
    torch.testing.assert_close(2 * v[:, 0] + v[:, 1], torch.full((5,), 0.4, dtype=f64))
    # within B(w̄, 0.2) the line's risk 1.6(2.5 − w1 w2)² lies in [1.6·0.0808², 1.6·0.1²]
    assert bool((a['risk_samples'] >= 1.6 * (2.5 - 2.4192) ** 2 - 1e-9).all()) and bool((a['risk_samples'] <= 0.016 + 1e-12).all())
    assert abs(a['risk_if'] - 1.6 * (2.5 - 1.16 * 2.08) ** 2) < 1e-14
    assert abs(a['risk_line_min'] - 1.6 * 0.08 ** 2) < 1e-6              # at v1 = 0.1: w1 w2 = 2.42
    assert abs(a['kappa_mixed'] - 0.2) < 1e-12
    assert a['excess_new_over_old'] > a['radius']


def test_study_writes_figures(tmp_path):
    res = toy_study(tmp_path, quick=True)
    assert (tmp_path / 'toy_figure2.png').stat().st_size > 10_000
    assert (tmp_path / 'toy_figure3.png').stat().st_size > 10_000
    by = {r.quantity.split(' ')[0]: r for r in res}
    assert by['Lipschitz'].paper == 0.2 and abs(by['Lipschitz'].ours - 0.4) < 1e-12 and by['Lipschitz'].within is False
    assert by['radius'].within is True
    assert all(r.section.startswith('Paper 1') for r in res)
    assert toy_study(None, quick=True)[0].ours == res[0].ours


def test_toy_as_risk_matrix_free():
    "The toy through Risk + MINRES: min-norm shift (0.16, 0.08), samples on 2 v1 + v2 = 0.4."
    pytest.importorskip("setsens.risk")
    from setsens.toy import toy_risk
    from setsens.graphical import solution_shift, estimate_solution_set
    xbar, y, wbar, dx = toy_data()
    risk = toy_risk()
    torch.testing.assert_close(risk.w, wbar)
    torch.testing.assert_close(risk.hvp(torch.eye(2, dtype=f64)), H_HAND / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(risk.jx(torch.eye(2, dtype=f64)[:, None, :]), J_HAND / 2, rtol=0, atol=1e-12)
    dw, info = solution_shift(risk, dx[:, None], rtol=1e-12)
    torch.testing.assert_close(dw, T(0.16, 0.08), rtol=0, atol=1e-12)
    dw1, _ = solution_shift(risk, dx[:1, None], idx=[0], rtol=1e-12)  # only x1 perturbed; eq. 14: 1/|K| = 1
    # by hand: (1/2)·5 g gᵀ v = −(1/|K|)·(2 x̄1 g)·Δx1 = 0.4 g  ⇒  gᵀv = 2 v1 + v2 = 0.16
    assert abs(float(2 * dw1[0] + dw1[1]) - 0.16) < 1e-12
    pts, infos = estimate_solution_set(risk, dx[:, None], n=7, seed=1, rtol=1e-12)
    v = pts - wbar
    torch.testing.assert_close(2 * v[:, 0] + v[:, 1], torch.full((7,), 0.4, dtype=f64), rtol=0, atol=1e-10)
    assert float(v.std(0).max()) > 1e-3


@pytest.mark.parametrize('name', ['toy_analysis', 'toy_results', 'toy_figure2', 'toy_figure3', 'toy_study'])
def test_moved_study_names_still_import_from_toy(name):
    "Issue 14: the study code moved to setsens.toy_study; the old import warns and gives the same object."
    import setsens.toy, setsens.toy_study
    with pytest.warns(DeprecationWarning, match=f'setsens.toy.{name} has moved: import it from setsens.toy_study'):
        obj = getattr(setsens.toy, name)
    assert obj is getattr(setsens.toy_study, name)
    with pytest.raises(AttributeError): setsens.toy.no_such_name


def test_toy_module_holds_no_study_code():
    import setsens.toy
    assert not any(n in vars(setsens.toy) for n in ('Result', 'toy_study', 'toy_figure2', '_hyperbola', 'atomic_write'))
