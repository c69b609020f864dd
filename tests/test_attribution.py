"""setsens.attribution against float64 oracles: dense `torch.func.hessian` + `torch.linalg.pinv`/`solve`, dense SVD of
H⁺J_K, `graphical.lipschitz_modulus`, and bad inputs."""
import math, warnings
from functools import lru_cache
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev, vmap
from setsens.risk import Risk
from setsens.graphical import SetupWarning, lipschitz_modulus
from setsens.attribution import pinv_solve, influence_scores, sensitivity_modulus, worst_poisoning, poisoning_audit

f64 = torch.float64


def rel(a, b):
    return float(torch.linalg.vector_norm(torch.as_tensor(a, dtype=f64) - torch.as_tensor(b, dtype=f64))
                 / torch.linalg.vector_norm(torch.as_tensor(b, dtype=f64)))


@lru_cache(None)
def interp_mlp():
    "3-6-2 tanh MLP interpolating 6 points (MSE): Hessian of rank 12 of 38; range J ⊆ range H."
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    X, Y = torch.randn(6, 3, generator=g, dtype=f64), torch.randn(6, 2, generator=g, dtype=f64)
    opt = torch.optim.LBFGS(net.parameters(), max_iter=3000, tolerance_grad=1e-15, tolerance_change=0,
                            line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = 0.5*((net(X) - Y)**2).sum(1).mean(); l.backward(); return l
    for _ in range(5): opt.step(closure)
    r = Risk(net, 'mse', X, Y)
    Rf = lambda w: 0.5*((functional_call(net, r.unflatten(w), (X,)) - Y)**2).sum(1).mean()
    for _ in range(8):
        w = r.w
        r = r.at(w=w - torch.linalg.pinv(hessian(Rf)(w), hermitian=True, rtol=1e-10) @ grad(Rf)(w))
    return r, hessian(Rf)(r.w)


@lru_cache(None)
def dup_mlp():
    """4-6-2 tanh MLP whose 4th input copies the 3rd, 30 points (not interpolating): H singular, per-example gradients ≠ 0.
    Eigenvalues |θ|: 16 below 4e-15 (the kernel), two at 2e-11 (a flat direction), then 3.9e-7 and up: oracles use
    rtol=1e-9, inside the gap."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(36, 3, generator=g, dtype=f64); X = torch.cat([X, X[:, 2:]], 1)
    Y = torch.randn(36, 2, generator=g, dtype=f64)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    opt = torch.optim.LBFGS(net.parameters(), max_iter=1000, history_size=50, tolerance_grad=1e-13, tolerance_change=0,
                            line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = 0.5*((net(X[:30]) - Y[:30])**2).sum(1).mean(); l.backward(); return l
    opt.step(closure)
    r = Risk(net, 'mse', X[:30], Y[:30])
    rowl = lambda w, x, y: 0.5*((functional_call(net, r.unflatten(w), (x[None],)) - y[None])**2).sum()
    G = lambda X_, Y_: vmap(grad(rowl), (None, 0, 0))(r.w, X_, Y_)
    Rf = lambda w: vmap(rowl, (None, 0, 0))(w, r.X, r.Y).mean()
    for _ in range(10):                                                 # Newton polish
        w = r.w
        r = r.at(w=w - torch.linalg.pinv(hessian(Rf)(w), hermitian=True, rtol=1e-12) @ grad(Rf)(w))
    assert float(r.grad().norm()) < 1e-9
    G = lambda X_, Y_: vmap(grad(rowl), (None, 0, 0))(r.w, X_, Y_)
    return r, hessian(Rf)(r.w), G, X[30:], Y[30:]


def dense_J(r):
    "J = ∂_X ∇_w R, (p, n, d), by `jacrev` of the gradient."
    return jacrev(lambda X_: grad(lambda w: r._fsum(w, X_, r.Y)*r._scale)(r.w))(r.X)


# -- the solve ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kw,ref', [
    ({}, lambda H: torch.linalg.pinv(H, hermitian=True)),
    ({'damping': 1e-3}, lambda H: torch.linalg.inv(H + 1e-3*torch.eye(H.shape[0], dtype=f64))),
    ({'rank_rtol': 1e-1}, lambda H: torch.linalg.pinv(H, hermitian=True, rtol=1e-1)),
    ({'rank_rtol': 1e-2, 'damping': 1e-1}, None)])
def test_pinv_solve_dense(kw, ref):
    r, H = interp_mlp()
    B = torch.randn(r.p, 3, dtype=f64, generator=torch.Generator().manual_seed(2))
    x, info = pinv_solve(r, B, **kw)
    if ref is None:                      # cut-off on the eigenvalues of H, then (θ + λ)⁻¹ on the rest
        ev, V = torch.linalg.eigh(H)
        k = ev.abs() > 1e-2*ev.abs().max()
        expect = V[:, k] @ ((V[:, k].T @ B)/(ev[k] + 1e-1)[:, None])
    else: expect = ref(H) @ B
    assert rel(x, expect) < 1e-9
    assert info.status == 'converged' and bool(info.converged.all())
    x1, _ = pinv_solve(r, B[:, 0], **kw)
    assert x1.shape == (r.p,) and rel(x1, expect[:, 0]) < 1e-9


def test_pinv_solve_kernel_and_residuals():
    r, H = interp_mlp()
    B = torch.randn(r.p, 2, dtype=f64, generator=torch.Generator().manual_seed(3))
    _, info = pinv_solve(r, B)
    dense_rank = int(torch.linalg.matrix_rank(H, hermitian=True))
    assert dense_rank == 12 and info.kernel_dim_estimate == r.p - dense_rank
    assert bool(info.invariant.all()) and float(info.normres.max()) < 1e-9


def test_pinv_solve_powers():
    r, H = interp_mlp()
    B = torch.randn(r.p, dtype=f64, generator=torch.Generator().manual_seed(4))
    (x1, x2), _ = pinv_solve(r, B, powers=(1, 2))
    Hp = torch.linalg.pinv(H, hermitian=True)
    assert rel(x1, Hp @ B) < 1e-9 and rel(x2, Hp @ Hp @ B) < 1e-8


def test_not_converged_is_reported():
    r, *_ = dup_mlp()
    B = torch.randn(r.p, dtype=f64, generator=torch.Generator().manual_seed(5))
    with pytest.warns(RuntimeWarning, match='did not converge'):
        _, info = pinv_solve(r, B, maxiter=3)
    assert info.status == 'maxiter' and not bool(info.converged.all())
    with pytest.warns(RuntimeWarning, match='did not converge'):
        _, ainfo = influence_scores(r, lambda w: w.pow(2).sum(), maxiter=3)
    assert ainfo.solve.status == 'maxiter'


# -- influence scores ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kind,damping,rank_rtol', [('remove', 0., 1e-9), ('upweight', 0., 1e-9),
                                                    ('remove', 1e-2, None), ('upweight', 0., 1e-3)])
def test_influence_scores_dense(kind, damping, rank_rtol):
    r, H, G, Xt, Yt = dup_mlp()
    S, info = influence_scores(r, (Xt, Yt), kind=kind, damping=damping, rank_rtol=rank_rtol)
    if damping: Hinv = torch.linalg.inv(H + damping*torch.eye(r.p, dtype=f64))
    else: Hinv = torch.linalg.pinv(H, hermitian=True, rtol=rank_rtol)
    up = -G(Xt, Yt) @ Hinv @ G(r.X, r.Y).T
    expect = up if kind == 'upweight' else -up/r.n
    assert S.shape == (len(Xt), r.n) and rel(S, expect) < 1e-8
    assert info.kind == kind and info.solve.status == 'converged'
    if not damping: assert info.solve.kernel_dim_estimate == r.p - int(torch.linalg.matrix_rank(H, hermitian=True, rtol=rank_rtol))


def test_influence_callable_query_and_chunks():
    r, H, G, Xt, Yt = dup_mlp()
    q = lambda w: functional_call(r.model, r.unflatten(w), (Xt,))[:, 0]          # m = 6 logits
    S, _ = influence_scores(r, q, chunk=7, rhs_chunk=4, rank_rtol=1e-9)
    Gq = jacrev(q)(r.w)
    assert rel(S, Gq @ torch.linalg.pinv(H, hermitian=True, rtol=1e-9) @ G(r.X, r.Y).T / r.n) < 1e-8


def test_influence_dataloader_risk():
    r, H, G, Xt, Yt = dup_mlp()
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(r.X, r.Y), batch_size=8)
    rl = Risk(r.model, 'mse', dl).at(w=r.w)                                     # the model holds the L-BFGS weights
    S, _ = influence_scores(rl, (Xt, Yt), rank_rtol=1e-9)
    assert rel(S, G(Xt, Yt) @ torch.linalg.pinv(H, hermitian=True, rtol=1e-9) @ G(r.X, r.Y).T / r.n) < 1e-8


def test_influence_from_function_mean_and_coupled():
    g = torch.Generator().manual_seed(6)
    X, Y = torch.randn(40, 5, generator=g, dtype=f64), torch.randint(0, 3, (40,), generator=g)
    X = torch.cat([X, X[:, :1]], 1)                                                # a duplicated feature: singular H
    fn = lambda P, X_, Y_: F.cross_entropy(X_ @ P['W'].T, Y_)
    W = torch.zeros(3, 6, dtype=f64, requires_grad=True)
    opt = torch.optim.LBFGS([W], max_iter=2000, tolerance_grad=1e-13, tolerance_change=0, line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = fn({'W': W}, X, Y) + 1e-2*W.pow(2).sum(); l.backward(); return l
    opt.step(closure)
    fr = lambda P, X_, Y_: fn(P, X_, Y_) + 1e-2*P['W'].pow(2).sum()
    r = Risk.from_function(fr, {'W': W.detach().clone()}, X, Y)
    S, info = influence_scores(r, (X[:3], Y[:3]), warn=False)
    rowl = lambda w, x, y: fr({'W': w.view(3, 6)}, x[None], y[None])
    Gr = vmap(grad(rowl), (None, 0, 0))(r.w, X, Y)
    H = hessian(lambda w: fr({'W': w.view(3, 6)}, X, Y))(r.w)
    assert rel(S, Gr[:3] @ torch.linalg.pinv(H, hermitian=True) @ Gr.T / 40) < 1e-8
    coupled = Risk.from_function(lambda P, X_, Y_: fn(P, X_, Y_)**2, {'W': W.detach().clone()}, X, Y)
    with pytest.raises(ValueError, match='couples its rows'):
        influence_scores(coupled, (X[:3], Y[:3]), warn=False)


# -- bad input ---------------------------------------------------------------------------------------------------------
def test_bad_queries():
    r, H, G, Xt, Yt = dup_mlp()
    with pytest.raises(ValueError, match='query: its gradient .* is zero'):
        influence_scores(r, lambda w: 0*w.sum() + 1.)
    with pytest.warns(RuntimeWarning, match='zero gradient'):
        S, info = influence_scores(r, lambda w: torch.stack([w[0]*w[1], 0*w[0] + 3.]))
    assert float(info.query_grad_norms[1]) == 0 and float(S[1].abs().max()) == 0
    with pytest.warns(RuntimeWarning, match='equal training rows'):
        _, info = influence_scores(r, (torch.cat([Xt[:1], r.X[4:5]]), torch.cat([Yt[:1], r.Y[4:5]])))
    assert info.test_in_train == [(1, 4)]
    with pytest.raises(TypeError, match='query'): influence_scores(r, 'test')
    with pytest.raises(ValueError, match='query: X_test rows'): influence_scores(r, (Xt[:, :3], Yt))
    with pytest.raises(ValueError, match='query: must return'): influence_scores(r, lambda w: torch.ones(2, 2, dtype=f64) @ w[:2, None])


def test_bad_arguments():
    r, *_ = dup_mlp()
    q = lambda w: w.pow(2).sum()
    with pytest.raises(ValueError, match='kind'): influence_scores(r, q, kind='delete')
    with pytest.raises(ValueError, match='damping'): influence_scores(r, q, damping=-1.)
    with pytest.raises(ValueError, match='rank_rtol'): influence_scores(r, q, rank_rtol=1.5)
    with pytest.raises((ValueError, TypeError), match='maxiter'): pinv_solve(r, r.w, maxiter=0)
    with pytest.raises(ValueError, match='B'): pinv_solve(r, r.w[:3])
    with pytest.raises((ValueError, TypeError), match='idx'): sensitivity_modulus(r, [0, 99])
    with pytest.raises((ValueError, TypeError), match='iters'): worst_poisoning(r, [0], iters=0)


def test_not_stationary_warns():
    r, H, G, Xt, Yt = dup_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter('error', SetupWarning)
        _, info = influence_scores(r, (Xt, Yt))                                    # trained: no warning
    assert info.grad_ratio < 0.1
    with pytest.warns(SetupWarning, match='not a stationary point'):
        _, info = influence_scores(r.at(w=r.w + 1e-2), (Xt, Yt))
    assert info.grad_ratio > 0.1


# -- moduli and the worst direction ------------------------------------------------------------------------------------
def test_modulus_per_point_dense():
    r, H = interp_mlp()
    J, Hp = dense_J(r), torch.linalg.pinv(H, hermitian=True)
    kap = sensitivity_modulus(r)
    expect = torch.stack([torch.linalg.matrix_norm(Hp @ J[:, i], 2) for i in range(r.n)])
    assert rel(kap, expect) < 1e-7
    sub = sensitivity_modulus(r, points=[5, 2], group=1)
    assert rel(sub, expect[[5, 2]]) < 1e-7


def test_modulus_set_dense_and_lipschitz():
    r, H = interp_mlp()
    J = dense_J(r)
    K = [0, 3, 5]
    JK = J[:, K].reshape(r.p, -1)
    k = sensitivity_modulus(r, K)
    assert abs(k - float(torch.linalg.matrix_norm(torch.linalg.pinv(H, hermitian=True) @ JK, 2))) < 1e-7*k
    assert abs(k - lipschitz_modulus(H, JK)) < 1e-7*k                             # range J_K ⊆ range H here
    kd = sensitivity_modulus(r, K, damping=1e-2)
    assert abs(kd - float(torch.linalg.matrix_norm(torch.linalg.inv(H + 1e-2*torch.eye(r.p, dtype=f64)) @ JK, 2))) < 1e-7*kd


def test_worst_poisoning_dense():
    r, H = interp_mlp()
    J, Hp = dense_J(r), torch.linalg.pinv(H, hermitian=True)
    K = [1, 4]
    A = Hp @ J[:, K].reshape(r.p, -1)
    U, S, Vh = torch.linalg.svd(A)
    P = worst_poisoning(r, K)
    assert P.converged and abs(P.modulus - float(S[0])) < 1e-8*float(S[0])
    v = P.dX[K].reshape(-1)
    assert abs(float(v.norm()) - 1) < 1e-12 and float(P.dX[[0, 2, 3, 5]].abs().max()) == 0
    assert abs(abs(float(Vh[0] @ v)) - 1) < 1e-8
    assert rel(P.dw, -A @ v) < 1e-8 and abs(float(P.dw.norm()) - float(S[0])) < 1e-8*float(S[0])


def test_power_iteration_not_converged_warns():
    r, _ = interp_mlp()
    with pytest.warns(RuntimeWarning, match='power iteration did not settle'):
        P = worst_poisoning(r, [0, 1, 2, 3, 4, 5], iters=2, tol=1e-14)
    assert not P.converged


def _gn_retrain(r):
    "Minimum-norm Gauss–Newton re-training of interp_mlp's zero-residual MSE problem on new inputs, from w̄ (dense)."
    def retrain(X_):
        out = lambda w: functional_call(r.model, r.unflatten(w), (X_,)).reshape(-1)
        f = lambda w: 0.5*((out(w) - r.Y.reshape(-1))**2).sum()/r.n
        w = r.w
        for _ in range(30):
            Jf = torch.func.jacrev(out)(w)
            w = w - torch.linalg.pinv(Jf.T @ Jf/r.n, hermitian=True, rtol=1e-12) @ grad(f)(w)
        return w
    return retrain


def test_poisoning_audit_against_dense_and_retraining():
    r, H = interp_mlp()
    J, Hp = dense_J(r), torch.linalg.pinv(H, hermitian=True)
    A = poisoning_audit(r, 2, _gn_retrain(r), t=1e-4, random_sets=4, seed=1)
    kap = torch.stack([torch.linalg.matrix_norm(Hp @ J[:, i], 2) for i in range(r.n)])
    assert rel(A.moduli, kap) < 1e-7 and A.grad_norm < 1e-12
    top = sorted(kap.argsort(descending=True)[:2].tolist())
    sets = [tuple(row['idx']) for row in A.rows]
    assert sets[0] == tuple(top) and len(set(sets)) == len(sets) == 5            # the top set, then distinct random sets
    for row in A.rows:
        dense = float(torch.linalg.matrix_norm(Hp @ J[:, row['idx']].reshape(r.p, -1), 2))
        assert abs(row['predicted'] - dense) < 1e-7*dense
        assert row['rel_error'] < 1e-3 and abs(row['actual'] - dense) < 1e-3*dense and row['cosine'] > 1 - 1e-6
        assert row['grad_norm'] < 1e-12
    assert '| top-k |' in A._repr_markdown_()
    # fewer distinct random sets than asked, when n and k leave fewer: C(6, 5) = 6 sets, one of them the top set
    A5 = poisoning_audit(r, 5, _gn_retrain(r), random_sets=9, moduli=A.moduli)
    assert len(A5.rows) == 6 and len({tuple(row['idx']) for row in A5.rows}) == 6


def test_poisoning_audit_bad_inputs():
    r, _ = interp_mlp()
    m = torch.ones(r.n, dtype=f64)
    ok = lambda X_: r.w
    with pytest.raises(ValueError, match='k: 7 rows asked'): poisoning_audit(r, 7, ok, moduli=m)
    with pytest.raises(ValueError, match='k: must be a positive integer'): poisoning_audit(r, 0, ok, moduli=m)
    with pytest.raises(ValueError, match='t: must be > 0'): poisoning_audit(r, 1, ok, t=0., moduli=m)
    with pytest.raises(ValueError, match='random_sets'): poisoning_audit(r, 1, ok, random_sets=-1, moduli=m)
    with pytest.raises(TypeError, match='retrain: expected a callable'): poisoning_audit(r, 1, 'newton', moduli=m)
    with pytest.raises(ValueError, match=r'moduli: expected shape \(6,\)'): poisoning_audit(r, 1, ok, moduli=m[:3])
    with pytest.raises(ValueError, match='retrain\\(X_new\\): expected flat weights'):
        poisoning_audit(r, 1, lambda X_: r.w[:3], moduli=m, random_sets=0)
    with pytest.raises(ValueError, match='retrain\\(X_new\\): contains NaN'):
        poisoning_audit(r, 1, lambda X_: torch.full_like(r.w, float('nan')), moduli=m, random_sets=0)
    with pytest.raises(TypeError, match='retrain\\(X_new\\): expected a torch.Tensor'):
        poisoning_audit(r, 1, lambda X_: r.w.tolist(), moduli=m, random_sets=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(r.X, r.Y), batch_size=3)
    rd = Risk(r.model, 'mse', loader)
    with pytest.raises(TypeError, match='risk: the audit perturbs the inputs in memory'): poisoning_audit(rd, 1, ok, moduli=m)


# -- round two: the block solve for many queries, and weight decay outside the risk ------------------------------------
@pytest.mark.parametrize('kw', [{'rank_rtol': 1e-9}, {'damping': 1e-2}, {'rank_rtol': 1e-3}])
def test_block_solve_matches_dense_and_lanczos(kw):
    r, H, G, Xt, Yt = dup_mlp()
    B = torch.cat([G(Xt, Yt).T, torch.randn(r.p, 4, dtype=f64, generator=torch.Generator().manual_seed(7))], 1)
    xb, ib = pinv_solve(r, B, method='block', **kw)
    xl, il = pinv_solve(r, B, method='lanczos', **kw)
    if 'damping' in kw: expect = torch.linalg.solve(H + kw['damping']*torch.eye(r.p, dtype=f64), B)
    else: expect = torch.linalg.pinv(H, hermitian=True, rtol=kw['rank_rtol']) @ B
    assert rel(xb, expect) < 1e-8 and rel(xl, expect) < 1e-8
    assert ib.method == 'block' and il.method == 'lanczos' and ib.status == 'converged'
    assert ib.hvps < il.hvps                                 # one shared space: fewer products than a space per column
    for c in (1e-6, 1e6):                                    # the rank test is scale-free (a bug once: ‖B‖ ≫ ‖H‖ stopped it early)
        assert rel(pinv_solve(r, c*B, method='block', **kw)[0], c*expect) < 1e-8
    if 'damping' not in kw: assert ib.kernel_dim_estimate == r.p - int(torch.linalg.matrix_rank(H, hermitian=True, rtol=kw['rank_rtol']))


def test_block_solve_auto_powers_and_bad_method():
    r, H = interp_mlp()
    B = torch.randn(r.p, 5, dtype=f64, generator=torch.Generator().manual_seed(8))
    (x1, x2), info = pinv_solve(r, B, powers=(1, 2))
    Hp = torch.linalg.pinv(H, hermitian=True)
    assert info.method == 'block' and rel(x1, Hp @ B) < 1e-9 and rel(x2, Hp @ Hp @ B) < 1e-8
    _, info = pinv_solve(r, B, block_mem=1)                  # the block basis does not fit: one space per column
    assert info.method == 'lanczos'
    assert pinv_solve(r, B[:, 0])[1].method == 'lanczos'
    with pytest.raises(ValueError, match='method'): pinv_solve(r, B, method='cg')
    with pytest.warns(RuntimeWarning, match='did not converge'):
        _, info = pinv_solve(r, B, method='block', maxiter=1)
    assert info.status == 'maxiter'


def _decay_problem(mu=0.3):
    "Softmax regression, 200 points, 6 features (one duplicated), trained on R + (μ/2)‖W‖² with R the plain mean CE."
    g = torch.Generator().manual_seed(9)
    X, Y = torch.randn(200, 5, generator=g, dtype=f64), torch.randint(0, 3, (200,), generator=g)
    X = torch.cat([X, X[:, :1]], 1)
    fn = lambda P, X_, Y_: F.cross_entropy(X_ @ P['W'].T, Y_)
    obj = lambda w, X_, Y_: fn({'W': w.view(3, 6)}, X_, Y_) + 0.5*mu*w.pow(2).sum()
    def newton(w, X_, Y_):
        for _ in range(30):
            g = grad(obj)(w, X_, Y_)
            if float(g.norm()) < 1e-13: break
            w = w - torch.linalg.solve(hessian(obj)(w, X_, Y_), g)
        assert float(grad(obj)(w, X_, Y_).norm()) < 1e-12
        return w
    w = newton(torch.zeros(18, dtype=f64), X, Y)
    return Risk.from_function(fn, {'W': w.view(3, 6).clone()}, X, Y), obj, newton, mu


def test_weight_decay_outside_the_risk():
    r, obj, newton, mu = _decay_problem()
    Xq, Yq = r.X[:5] + 0.1, r.Y[:5]
    q = lambda w: F.cross_entropy(Xq @ w.view(3, 6).T, Yq)
    with warnings.catch_warnings():
        warnings.simplefilter('error', SetupWarning)
        S, info = influence_scores(r, q, weight_decay=mu)       # stationary for R + (μ/2)‖w‖²: no warning
    assert info.grad_ratio < 1e-8
    with pytest.warns(SetupWarning, match='weight_decay='):     # damping is a solve regulariser: ∇R ≠ 0 at w̄
        Sd, dinfo = influence_scores(r, q, damping=mu)
    assert dinfo.grad_ratio > 0.1 and rel(Sd, S) < 1e-10       # same solve, different stationarity verdict
    rowl = lambda w, x, y: F.cross_entropy((x @ w.view(3, 6).T)[None], y[None])
    Gt = vmap(grad(rowl), (None, 0, 0))(r.w, r.X, r.Y)
    H = hessian(lambda w: obj(w, r.X, r.Y))(r.w)                # the Hessian of the training objective: H_R + μI
    assert rel(S[0], grad(q)(r.w) @ torch.linalg.solve(H, Gt.T) / r.n) < 1e-9
    actual = []                                                 # leave-one-out re-training of the decayed objective
    for i in range(r.n):
        keep = torch.arange(r.n) != i
        actual.append(float(q(newton(r.w, r.X[keep], r.Y[keep])) - q(r.w)))
    actual = torch.tensor(actual, dtype=f64)
    assert float(torch.corrcoef(torch.stack([S[0], actual]))[0, 1]) > 0.99
    err = lambda a: float((a - actual).norm()/actual.norm())
    S0, _ = influence_scores(r, q, warn=False)                  # ignoring the decay (H_R⁺): measured 85 % off vs 2.4 %
    assert err(S[0]) < 0.05 and err(S0[0]) > 1.5*err(S[0])
    with pytest.raises(ValueError, match='weight_decay'): influence_scores(r, q, weight_decay=-1.)


# -- the default cut-off: measured rounding level, ambiguous band --------------------------------------------------------
@pytest.mark.parametrize('method', ['lanczos', 'block'])
def test_rounding_level_and_ambiguous_band(method):
    r, H = interp_mlp()
    B = torch.randn(r.p, 3, dtype=f64, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        x, info = pinv_solve(r, B, method=method)                 # default: no warning on a problem with a clean gap
    assert rel(x, torch.linalg.pinv(H, hermitian=True) @ B) < 1e-9
    assert 0 < info.rounding < 1e-12*info.sigma_max             # float64 rounding of the products, measured
    assert info.cutoff == max(r.p*torch.finfo(f64).eps*info.sigma_max, 1000*info.rounding)
    assert info.ambiguous_kept == 0
    with pytest.warns(RuntimeWarning, match='rounding level'):  # keep everything: kernel Ritz values are kept and warned
        _, i0 = pinv_solve(r, B, method=method, rank_rtol=0.)
    assert i0.ambiguous_kept > 0 and i0.ambiguous >= i0.ambiguous_kept
    _, id_ = pinv_solve(r, B, method=method, damping=1e-3)       # damped: no cut-off, nothing near the rounding level
    assert id_.cutoff == 0 and id_.ambiguous == 0


def test_moduli_warn_on_ambiguous_rank_decisions():
    # sensitivity_modulus and worst_poisoning solve with H inside a power iteration: the same warning as pinv_solve.
    # dup_mlp, since J's columns leave range H there (on interp_mlp they lie in it and Lanczos never meets the kernel)
    r = dup_mlp()[0]
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        k = sensitivity_modulus(r, [0, 1], iters=5)
    for f in (lambda: sensitivity_modulus(r, [0, 1], iters=5, rank_rtol=0.),
              lambda: sensitivity_modulus(r, points=[0, 1], iters=5, rank_rtol=0.),
              lambda: worst_poisoning(r, [0, 1], iters=5, rank_rtol=0.)):
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            f()
        assert any('rounding level' in str(w.message) for w in ws), [str(w.message) for w in ws]
        assert all(w.filename == __file__ for w in ws if 'rounding level' in str(w.message))   # points at the caller
    assert k > 0


def test_mem_budget_fewer_columns_at_once_then_a_clear_error():
    """A 109k-parameter MLP with 50 queries was killed by the kernel (the 32-column Lanczos basis outgrew 24 GiB).
    `mem_budget` caps every basis: 'lanczos' restarts a chunk with half the columns, the result is the same, the spent
    products are counted; one column that cannot fit, or a block basis that cannot, is a MemoryError naming it."""
    r, H, G, Xt, Yt = dup_mlp()
    B = torch.cat([G(Xt, Yt).T, torch.randn(r.p, 1, dtype=f64, generator=torch.Generator().manual_seed(9))], 1)   # (p, 7)
    kw = dict(rank_rtol=1e-9, method='lanczos')
    x0, i0 = pinv_solve(r, B, **kw)
    steps = int(i0.iterations.max())
    assert steps > 16                                              # so a 7-column basis must grow past its first 16 rows
    one = (r.p + 1)*r.p*8                                          # one column's basis at most (p + 1 steps)
    x1, i1 = pinv_solve(r, B, mem_budget=one, **kw)
    expect = torch.linalg.pinv(H, hermitian=True, rtol=1e-9) @ B
    ev = torch.linalg.eigvalsh(H).abs()
    tmin = float(ev[ev > 1e-9*ev.max()].min())                    # the smallest kept eigenvalue (3.9e-7)
    tol = 4*max(i0.rounding, i1.rounding)/tmin                     # first order: ‖δx‖/‖x‖ ≤ ‖E‖/θ_min, ‖E‖ ≈ ρ measured (≈ 1.5e-8 here)
    assert bool(i1.converged.all()) and rel(x1, expect) < tol and rel(x0, expect) < tol    # restarts cost products,
    assert i1.hvps > int(i1.iterations.sum())                                               # not accuracy; counted
    with pytest.raises(MemoryError, match='mem_budget: the Krylov basis of one right-hand side'):
        pinv_solve(r, B, mem_budget=4*r.p*8, **kw)
    with pytest.raises(MemoryError, match="mem_budget: the block Krylov basis.*method='lanczos'"):
        pinv_solve(r, B, method='block', rank_rtol=1e-9, mem_budget=one)
    xa, ia = pinv_solve(r, B, rank_rtol=1e-9, mem_budget=one)     # 'auto' tries one block space; it outgrows the budget, so
    assert ia.method == 'lanczos' and ia.hvps > i1.hvps and rel(xa, expect) < tol     # a space per column, the block's products counted
    assert pinv_solve(r, B, rank_rtol=1e-9, mem_budget=4*one)[1].method == 'block'   # a budget the block basis fits: one space
    for bad in ('4 GiB', -1.):
        with pytest.raises((TypeError, ValueError), match='mem_budget'): pinv_solve(r, B, mem_budget=bad)
    with pytest.raises(ValueError, match='block_mem'): pinv_solve(r, B, block_mem=0)
    with pytest.raises(MemoryError, match='mem_budget'):
        influence_scores(r, (Xt, Yt), mem_budget=4*r.p*8, warn=False)
    for m in ('lanczos', 'block'):                                 # no budget (math.inf, accepted above) is no limit: it
        xi, _ = pinv_solve(r, B, method=m, rank_rtol=1e-9, mem_budget=math.inf)     # once failed to size the basis (int(inf // b))
        assert torch.equal(xi, pinv_solve(r, B, method=m, rank_rtol=1e-9)[0])


def _quadratic(p=600, r=300, lo=1e-4, seed=3):
    "R(w) = ½ wᵀAw with A = U diag(λ) Uᵀ of rank r, λ log-spaced in [lo, 100] (all distinct), then p − r zeros: H = A exactly."
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=f64))
    lam = torch.cat([torch.logspace(2, torch.log10(torch.tensor(lo)).item(), r, dtype=f64), torch.zeros(p - r, dtype=f64)])
    A = (U*lam) @ U.T
    A = (A + A.T)/2
    risk = Risk.from_function(lambda P, X, Y: 0.5*P['w'] @ (A @ P['w']), {'w': torch.zeros(p, dtype=f64)}, torch.zeros(1, 1, dtype=f64))
    return risk, A, r, g


@pytest.mark.parametrize('method', ['lanczos', 'block'])
def test_reorthogonalisation_keeps_the_rank_and_the_solution(method):
    """Issue 17 made the full reorthogonalisation lean (the three-term recurrence, one Gram–Schmidt pass, a second
    only where the first cancelled; the block's T filled incrementally). Without enough reorthogonalisation Lanczos
    finds spurious copies of converged Ritz values ("ghosts") past the first few dozen steps: the rank estimate would
    exceed the true rank, the steps would exceed the number of distinct eigenvalues, and 1/θ of a ghost would enter the
    solution. 300 distinct eigenvalues over six decades and a 300-dimensional kernel need about 300 steps. (With the
    reorthogonalisation switched off, both methods stop early with a relative error of 1.0.)"""
    risk, A, r, g = _quadratic()
    B = torch.randn(risk.p, 3, generator=g, dtype=f64)
    x, info = pinv_solve(risk, B, method=method)
    expect = torch.linalg.pinv(A, hermitian=True, rtol=1e-9) @ B
    assert info.status == 'converged' and r - 2 <= info.rank_estimate <= r     # no ghost counted as an eigenvalue
    assert rel(x, expect) < 1e4*torch.finfo(f64).eps*1e6       # κ = 1e6 over the kept spectrum: ε·κ times a margin of 1e4
    steps = info.hvps if method == 'block' else int(info.iterations.max())
    k = B.shape[1]                                              # ghosts would cost extra steps: r + 1 per column in exact
    # arithmetic, or r + k (the range, B's k kernel parts) and a last block; the step that ends a column is the one where β falls
    # to the rounding level, which on some BLAS kernels comes a few steps after r + 1 (304 seen on an AVX-512 machine)
    assert r - 10 <= steps <= (r + 2*k if method == 'block' else r + 10)


def test_progress_bar_counts_hvp_columns(capfd):
    r, H, G, Xt, Yt = dup_mlp()
    B = G(Xt, Yt).T
    _, info = pinv_solve(r, B, progress=True)
    err = capfd.readouterr().err
    assert 'pinv_solve' in err and 'HVP' in err
    pinv_solve(r, B, progress=False)
    assert 'pinv_solve' not in capfd.readouterr().err           # and under pytest (None) it is silent
    pinv_solve(r, B)
    assert capfd.readouterr().err == ''
    influence_scores(r, (Xt, Yt), progress=True, warn=False)
    assert 'pinv_solve' in capfd.readouterr().err
    with pytest.raises(TypeError, match='progress'): pinv_solve(r, B, progress='yes')
