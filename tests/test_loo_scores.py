"""`setsens.attribution.loo_scores` (leave-one-out by one Newton step) against float64 oracles: the dense Hessians of R and
of the removed row (`torch.func.hessian`) with `torch.linalg.solve`/`pinv`, the exact leave-one-out minimiser of a
quadratic, re-training of a logistic regression; and bad inputs."""
import warnings
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, vmap
from setsens.risk import Risk
from setsens.graphical import SetupWarning
from setsens.attribution import loo_scores, influence_scores
from test_attribution import dup_mlp, rel

f64 = torch.float64


def _softmax_regression(n=60, d=4, c=3, lam=1e-2, seed=0):
    "Mean cross-entropy + (λ/2)‖w‖² in every row, trained by dense Newton to ‖∇‖ ≤ 1e-13."
    g = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(n, d, generator=g, dtype=f64), torch.randint(0, c, (n,), generator=g)
    fn = lambda P, X_, Y_: F.cross_entropy(X_ @ P['W'].T, Y_) + 0.5*lam*P['W'].pow(2).sum()
    f = lambda w, X_, Y_: fn({'W': w.view(c, d)}, X_, Y_)
    def newton(w, X_, Y_):
        for _ in range(50):
            gw = grad(f)(w, X_, Y_)
            if float(gw.norm()) <= 1e-13: break
            w = w - torch.linalg.solve(hessian(f)(w, X_, Y_), gw)
        return w
    w = newton(torch.zeros(c*d, dtype=f64), X, Y)
    return Risk.from_function(fn, {'W': w.view(c, d)}, X, Y), f, newton, X, Y


def test_newton_step_equals_the_dense_solve_with_the_row_taken_out():
    r, f, _, X, Y = _softmax_regression()
    H = hessian(lambda w: f(w, X, Y))(r.w)
    q = lambda w: F.cross_entropy(X[:7] @ w.view(3, 4).T + 0.3, Y[:7])
    idx = [0, 5, 59]
    S, info = loo_scores(r, q, idx)
    for j, i in enumerate(idx):
        Hi = hessian(lambda w: f(w, X[i:i + 1], Y[i:i + 1]))(r.w)
        gi = grad(lambda w: f(w, X[i:i + 1], Y[i:i + 1]))(r.w)
        dw = torch.linalg.solve(H - Hi/r.n, gi/r.n)
        assert rel(info.dw[:, j], dw) < 1e-10
        assert rel(info.first_order[:, j], torch.linalg.solve(H, gi/r.n)) < 1e-10
        assert abs(float(S[0, j] - (q(r.w + dw) - q(r.w)))) <= 1e-10*abs(float(q(r.w + dw) - q(r.w)))
        assert rel(info.linear[0, j], grad(q)(r.w) @ dw) < 1e-10
    assert all(s.status == 'converged' for s in info.solves) and info.grad_norm < 1e-12


def test_closer_to_retraining_than_first_order():
    "The point of the method: on softmax regression the one-step prediction is closer to re-training than influence."
    r, f, newton, X, Y = _softmax_regression(n=40, lam=1e-3, seed=1)
    g = torch.Generator().manual_seed(7)
    Xq, Yq = torch.randn(30, 4, generator=g, dtype=f64), torch.randint(0, 3, (30,), generator=g)
    q = lambda w: F.cross_entropy(Xq @ w.view(3, 4).T, Yq)                               # a held-out mean loss
    idx = list(range(12))
    S, _ = loo_scores(r, q, idx)
    S1, _ = influence_scores(r, q)
    actual = torch.tensor([float(q(newton(r.w, X[torch.arange(40) != i], Y[torch.arange(40) != i])) - q(r.w))
                           for i in idx], dtype=f64)
    e_loo, e_first = rel(S[0], actual), rel(S1[0, idx], actual)
    assert e_loo < 0.5*e_first, (e_loo, e_first)


def test_exact_on_a_quadratic_with_weight_decay():
    "Least squares: F_i is quadratic, so one Newton step is the leave-one-out minimiser (weight decay outside R)."
    g = torch.Generator().manual_seed(4)
    X, Y, mu = torch.randn(25, 3, generator=g, dtype=f64), torch.randn(25, generator=g, dtype=f64), 0.1
    A = lambda X_: X_.T @ X_/25 + mu*torch.eye(3, dtype=f64)
    w = torch.linalg.solve(A(X), X.T @ Y/25)
    r = Risk.from_function(lambda P, X_, Y_: 0.5*((X_ @ P['w'] - Y_)**2).mean(), {'w': w}, X, Y)
    S, info = loo_scores(r, lambda w_: w_, [3, 11], weight_decay=mu)
    for j, i in enumerate([3, 11]):
        k = torch.arange(25) != i
        assert rel(S[:, j], torch.linalg.solve(A(X[k]), X[k].T @ Y[k]/25) - w) < 1e-11
        lev = float(X[i] @ torch.linalg.solve(A(X), X[i]))/25                  # the leverage of row i (c = 1, u = x_i)
        assert abs(float(info.step_ratio[j]) - 1/(1 - lev)) < 1e-10
    assert float((info.rho - 1).abs().max()) < 1e-8                        # a quadratic F_i is its own model


def test_rho_against_the_dense_model():
    "info.model_decrease and info.rho from F_i = R − sℓ_i, its gradient and Hessian at w̄ by dense autograd."
    r, f, _, X, Y = _softmax_regression(n=40, lam=1e-3, seed=1)
    idx = [0, 9, 33]
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                      # no warning on a convex problem
        _, info = loo_scores(r, lambda w: w.sum(), idx)
    for j, i in enumerate(idx):
        Fi = lambda w: f(w, X, Y) - f(w, X[i:i + 1], Y[i:i + 1])/40           # ℓ_i includes the L2 term, as each row of f does
        d = info.dw[:, j]
        pred = -(grad(Fi)(r.w) @ d + 0.5*d @ hessian(Fi)(r.w) @ d)
        assert abs(float(info.model_decrease[j] - pred)) < 1e-10*float(pred)
        assert abs(float(info.rho[j]) - float((Fi(r.w) - Fi(r.w + d))/pred)) < 1e-8
        assert 0.5 < float(info.rho[j]) < 1.5


def test_warns_where_the_quadratic_model_does_not_fit():
    "R(w) = εw²/2 + w⁴/4 from three rows, two of them ±3w: removing one leaves F = εw²/2 + w⁴/4 ∓ w, whose Newton step 1/ε overshoots."
    eps = 0.01
    fn = lambda P, X_, Y_: (3*(X_[:, 0]*(eps/2*P['w'][0]**2 + P['w'][0]**4/4) + X_[:, 1]*P['w'][0])).mean()
    X = torch.tensor([[1., 0.], [0., 1.], [0., -1.]], dtype=f64)
    r = Risk.from_function(fn, {'w': torch.zeros(1, dtype=f64)}, X, torch.zeros(3, dtype=f64))
    with pytest.warns(RuntimeWarning, match=r'rows \[1, 2\] F_i'):
        S, info = loo_scores(r, lambda w: w, [1, 2])
    assert torch.allclose(S[0], torch.tensor([1/eps, -1/eps], dtype=f64), rtol=1e-10)
    F = lambda w: eps/2*w**2 + w**4/4 - w                                  # row 1 removed, analytically
    assert abs(float(info.model_decrease[0]) - 1/(2*eps)) < 1e-8
    assert abs(float(info.rho[0]) - (F(0.) - F(1/eps))*2*eps) < 1e-6*abs((F(0.) - F(1/eps))*2*eps)


def test_singular_hessian_gives_the_minimum_norm_step():
    "dup_mlp: H and every H − sH_i share the kernel of the duplicated input; the step is the pseudo-inverse one."
    r, H, G, Xt, Yt = dup_mlp()
    rowl = lambda w, x, y: 0.5*((functional_call(r.model, r.unflatten(w), (x[None],)) - y[None])**2).sum()
    S, info = loo_scores(r, (Xt, Yt), [2, 17])
    for j, i in enumerate([2, 17]):
        Hi = hessian(rowl)(r.w, r.X[i], r.Y[i])
        dw = torch.linalg.pinv(H - Hi/r.n, hermitian=True, rtol=1e-9) @ G(r.X[i:i + 1], r.Y[i:i + 1])[0]/r.n
        assert rel(info.dw[:, j], dw) < 1e-7
        rows = vmap(rowl, (None, 0, 0))
        assert rel(S[:, j], rows(r.w + dw, Xt, Yt) - rows(r.w, Xt, Yt)) < 1e-6
    assert info.solves[0].kernel_dim_estimate > 0


def test_test_rows_and_their_mean_agree():
    r, f, _, X, Y = _softmax_regression()
    Xt, Yt = X[:5] + 0.1, Y[:5]
    S, _ = loo_scores(r, (Xt, Yt), [1, 2])
    Sm, _ = loo_scores(r, lambda w: f(w, Xt, Yt), [1, 2])              # a test row's loss includes the L2 term, as f does
    assert rel(S.mean(0), Sm[0]) < 1e-12


def test_bad_input():
    r, f, _, X, Y = _softmax_regression()
    q = lambda w: w.sum()
    with pytest.raises(ValueError, match='idx'): loo_scores(r, q, [60])
    with pytest.raises(TypeError, match='idx'): loo_scores(r, q, [0.5])
    with pytest.raises(ValueError, match='does not depend'): loo_scores(r, lambda w: w.sum()*0, [0])
    with pytest.raises(ValueError, match='weight_decay'): loo_scores(r, q, [0], weight_decay=-1.)
    coupled = Risk.from_function(lambda P, X_, Y_: F.cross_entropy(X_ @ P['W'].T, Y_)*len(X_), {'W': r.unflatten(r.w)['W']}, X, Y)
    with pytest.raises(ValueError, match='not the mean of fn over single rows'): loo_scores(coupled, q, [0])
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        loo_scores(r, q, [0, 1], maxiter=2)
        loo_scores(r.at(w=r.w + 0.1), q, [0])
    msgs = [str(w.message) for w in ws]
    assert any('did not converge for rows [0, 1]' in m for m in msgs) and any('not a stationary point' in m for m in msgs)
