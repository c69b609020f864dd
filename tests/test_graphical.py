"Float64 oracles for setsens.graphical: random rank-deficient problems with known null spaces."
import math, warnings
import pytest
import torch
from setsens.graphical import (graphical_derivative, coderivative, lipschitz_modulus, eq14_matrices,
                               per_example_derivatives, solution_set_estimate, influence_point, training_stability)

f64 = torch.float64


def problem(p=7, r=4, d=3, seed=0, leak=0., spread=1.):
    "A = Q_r diag(s) Q_rᵀ (symmetric, rank r, ker A = span Q_⊥ known); B = Q_r C + leak·Q_⊥ E."
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=f64))
    Qr, Qn = Q[:, :r], Q[:, r:]
    s = (torch.rand(r, generator=g, dtype=f64) + 0.2) * spread * torch.where(torch.rand(r, generator=g) < 0.3, -1., 1.).to(f64)
    A = Qr @ torch.diag(s) @ Qr.T
    B = Qr @ torch.randn(r, d, generator=g, dtype=f64) + leak * Qn @ torch.randn(p - r, d, generator=g, dtype=f64)
    return A, B, Qr, Qn, s


def nonsym_problem(p=6, r=3, d=4, seed=1):
    "A = U_r diag(s) V_rᵀ, non-symmetric, with range A = span U_r and B = U_r C."
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=f64))
    V, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=f64))
    s = torch.rand(r, generator=g, dtype=f64) + 0.3
    A = U[:, :r] @ torch.diag(s) @ V[:, :r].T
    B = U[:, :r] @ torch.randn(r, d, generator=g, dtype=f64)
    return A, B, U, V, s


def projector(Q): return Q @ Q.T


@pytest.mark.parametrize("seed,p,r,d", [(0, 7, 4, 3), (1, 10, 2, 5), (2, 5, 5, 2), (3, 6, 1, 6)])
def test_graphical_derivative_vs_pinv_lstsq(seed, p, r, d):
    A, B, Qr, Qn, s = problem(p, r, d, seed)
    g = torch.Generator().manual_seed(100 + seed)
    mu = torch.randn(d, generator=g, dtype=f64)
    D = graphical_derivative(A, B, mu)
    assert D.dim == p - r
    torch.testing.assert_close(D.point, -torch.linalg.pinv(A) @ B @ mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(D.point, -torch.linalg.lstsq(A, B @ mu, driver='gelsd').solution, rtol=1e-10, atol=1e-12)
    if p > r:
        torch.testing.assert_close(projector(D.basis), projector(Qn), rtol=0, atol=1e-12)
    # every member solves the equation; moving off the set along range A breaks it
    z = torch.randn(p - r, generator=g, dtype=f64)
    v = D.point + Qn @ z
    torch.testing.assert_close(A @ v, -B @ mu, rtol=0, atol=1e-11)
    assert bool(D.contains(v)) and not bool(D.contains(v + 0.1 * Qr[:, 0]))
    # the minimum-norm point is orthogonal to the null space (it is the pinv solution)
    assert float((Qn.T @ D.point).abs().max()) < 1e-12 if p > r else True


def test_graphical_derivative_nonsymmetric():
    A, B, U, V, s = nonsym_problem()
    mu = torch.tensor([1., -1., 2., 0.5], dtype=f64)
    D = graphical_derivative(A, B, mu)
    torch.testing.assert_close(D.point, -torch.linalg.pinv(A) @ B @ mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(projector(D.basis), projector(V[:, 3:]), rtol=0, atol=1e-12)


def test_graphical_derivative_inconsistent_warns_and_returns_least_squares():
    A, B, Qr, Qn, _ = problem(leak=1.)
    mu = torch.tensor([0.3, -1., 2.], dtype=f64)
    with pytest.warns(RuntimeWarning, match='least-squares'):
        D = graphical_derivative(A, B, mu)
    ls = torch.linalg.lstsq(A, -B @ mu, driver='gelsd').solution
    torch.testing.assert_close(D.point, ls, rtol=1e-10, atol=1e-12)
    # the least-squares set: Aᵀ(Av + Bμ) = 0 for its members
    v = D.point + Qn @ torch.ones(Qn.shape[1], dtype=f64)
    torch.testing.assert_close(A.T @ (A @ v + B @ mu), torch.zeros(7, dtype=f64), rtol=0, atol=1e-11)


def test_graphical_derivative_consistent_does_not_warn():
    A, B, *_ = problem()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        graphical_derivative(A, B, torch.ones(3, dtype=f64))


def test_rank_tolerance():
    "A tiny singular value is kept by default and dropped with a looser rtol."
    A, B, Qr, Qn, s = problem(p=5, r=5, d=2, seed=4)
    Q = torch.cat([Qr, Qn], 1)
    s2 = s.clone(); s2[-1] = 1e-10
    A2 = Qr @ torch.diag(s2) @ Qr.T
    mu = torch.tensor([1., 2.], dtype=f64)
    assert graphical_derivative(A2, Qr @ Qr.T @ B, mu).dim == 0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        assert graphical_derivative(A2, B, mu, rtol=1e-6).dim == 1


def in_normal_range(A, B, q, p):
    M, rhs = torch.cat([B, A], 1).T, torch.cat([q, -p])
    y = torch.linalg.lstsq(M, rhs, driver='gelsd').solution
    return float(torch.linalg.vector_norm(M @ y - rhs))


@pytest.mark.parametrize("leak", [0., 1.])
def test_coderivative_membership(leak):
    A, B, Qr, Qn, _ = problem(p=7, r=4, d=5, leak=leak, seed=5)
    g = torch.Generator().manual_seed(7)
    p = A.T @ torch.randn(7, generator=g, dtype=f64)
    C = coderivative(A, B, p)
    assert C is not None and C.dim == (0 if leak == 0 else 3)      # B ker Aᵀ: 3 directions in R⁵
    pts = C.sample(6, radius=3., generator=g) if C.dim else C.point[None]
    for q in pts:
        assert in_normal_range(A, B, q, p) < 1e-10
    e = torch.randn(5, generator=g, dtype=f64)
    e = e - C.basis @ (C.basis.T @ e)                             # a direction off the set
    assert in_normal_range(A, B, C.point + e / torch.linalg.vector_norm(e), p) > 1e-3


def test_coderivative_closed_form():
    "When range B ⊆ range A, D*S(p) = {−(A†B)ᵀ p}."
    A, B, *_ = problem(seed=6)
    p = A @ torch.arange(7., dtype=f64)
    C = coderivative(A, B, p)
    assert C.dim == 0
    torch.testing.assert_close(C.point, -(torch.linalg.pinv(A) @ B).T @ p, rtol=1e-10, atol=1e-12)


def test_coderivative_empty():
    A, B, Qr, Qn, _ = problem()
    with pytest.warns(RuntimeWarning, match='empty'):
        assert coderivative(A, B, Qn[:, 0] + 0.5 * Qr[:, 0]) is None


def brute_modulus(A, B, m=40000, seed=0):
    "sup over sampled unit p ∈ range Aᵀ of ‖Bᵀ y‖ with Aᵀ y = −p solved by lstsq (no shared code)."
    g = torch.Generator().manual_seed(seed)
    P = A.T @ torch.randn(A.shape[0], m, generator=g, dtype=A.dtype)
    P = P / torch.linalg.vector_norm(P, dim=0)
    Y = torch.linalg.lstsq(A.T, -P, driver='gelsd').solution
    assert float(torch.linalg.vector_norm(A.T @ Y + P, dim=0).max()) < 1e-10
    return float(torch.linalg.vector_norm(B.T @ Y, dim=0).max())


def power_modulus(A, B, iters=300):
    "‖A†B‖₂ by power iteration on MᵀM with M = lstsq(A, B): an independent route to the same number."
    M = torch.linalg.lstsq(A, B, driver='gelsd').solution
    v = torch.ones(B.shape[1], dtype=f64)
    for _ in range(iters):
        v = M.T @ (M @ v); v = v / torch.linalg.vector_norm(v)
    return float(torch.linalg.vector_norm(M @ v))


@pytest.mark.parametrize("seed,p,r,d", [(0, 7, 4, 3), (1, 5, 3, 2), (2, 6, 2, 2)])
def test_modulus_vs_brute_force(seed, p, r, d):
    A, B, *_ = problem(p, r, d, seed)
    kap = lipschitz_modulus(A, B)
    kb = brute_modulus(A, B)
    assert kb <= kap * (1 + 1e-10)
    assert kb >= kap * 0.98
    assert abs(power_modulus(A, B) - kap) < 1e-9 * kap


def test_modulus_outer_norm_of_graphical_derivative():
    "sup over unit μ of the smallest ‖v‖ in DS(μ) equals the modulus too."
    A, B, *_ = problem(p=6, r=3, d=2, seed=8)
    kap = lipschitz_modulus(A, B)
    th = torch.linspace(0, 2 * math.pi, 20001, dtype=f64)
    Mu = torch.stack([torch.cos(th), torch.sin(th)])
    V = torch.linalg.lstsq(A, -B @ Mu, driver='gelsd').solution
    assert abs(float(torch.linalg.vector_norm(V, dim=0).max()) - kap) < 1e-6 * kap


def test_modulus_nonsymmetric():
    A, B, *_ = nonsym_problem()
    kap = lipschitz_modulus(A, B)
    assert abs(kap - power_modulus(A, B)) < 1e-9 * kap
    assert brute_modulus(A, B) <= kap * (1 + 1e-10)


def test_modulus_infinite_when_B_leaks_into_kernel():
    A, B, Qr, Qn, _ = problem(leak=1e-3)
    assert lipschitz_modulus(A, B) == math.inf
    C0 = coderivative(A, B, torch.zeros(7, dtype=f64))
    assert C0.dim > 0                                             # D*S(0) ≠ {0}
    q = C0.basis[:, 0]
    assert in_normal_range(A, B, q, torch.zeros(7, dtype=f64)) < 1e-10


def test_modulus_nonsingular_is_classical():
    "Non-singular A: the modulus is ‖A⁻¹B‖₂ (implicit function theorem)."
    A, B, *_ = problem(p=4, r=4, d=3, seed=9)
    torch.testing.assert_close(torch.tensor(lipschitz_modulus(A, B), dtype=f64),
                               torch.linalg.matrix_norm(torch.linalg.solve(A, B), 2), rtol=1e-10, atol=0)


def test_modulus_degenerate():
    assert lipschitz_modulus(torch.eye(3, dtype=f64), torch.zeros(3, 2, dtype=f64)) == 0.
    assert lipschitz_modulus(torch.zeros(3, 3, dtype=f64), torch.ones(3, 2, dtype=f64)) == math.inf


def test_eq14_weights_and_stacking():
    "eq14_matrices vs an explicit sum over K with 1/|I| and 1/|K| (and 1/n for 'mean')."
    g = torch.Generator().manual_seed(3)
    n, p, d = 5, 4, 2
    Hs = torch.randn(n, p, p, generator=g, dtype=f64); Hs = Hs + Hs.mT
    Js = torch.randn(n, p, d, generator=g, dtype=f64)
    K = [4, 1]
    dX = torch.randn(2, d, generator=g, dtype=f64)
    A, B = eq14_matrices(Hs, Js, K)
    torch.testing.assert_close(A, sum(Hs[i] for i in range(n)) / n)
    torch.testing.assert_close(B @ dX.reshape(-1), (Js[4] @ dX[0] + Js[1] @ dX[1]) / 2)
    Am, Bm = eq14_matrices(Hs, Js, K, weighting="mean")
    torch.testing.assert_close(Bm @ dX.reshape(-1), (Js[4] @ dX[0] + Js[1] @ dX[1]) / n)
    A_all, B_all = eq14_matrices(Hs, Js)
    assert B_all.shape == (p, n * d)
    with pytest.raises(ValueError, match='idx'): eq14_matrices(Hs, Js, [1, 1])
    with pytest.raises(ValueError, match='idx'): eq14_matrices(Hs, Js, [5])
    with pytest.raises(ValueError, match='idx'): eq14_matrices(Hs, Js, [])
    with pytest.raises(ValueError, match='weighting'): eq14_matrices(Hs, Js, weighting='sum')
    with pytest.raises(ValueError, match='jacobians'): eq14_matrices(Hs, Js[:, :3])


def test_per_example_derivatives_vs_autograd():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, generator=g, dtype=f64)
    X = torch.randn(4, 2, generator=g, dtype=f64)
    Y = torch.randn(4, generator=g, dtype=f64)
    loss = lambda w, x, y: (torch.tanh(w[0] * x[0] + w[1] * x[1]) * w[2] - y) ** 2
    Hs, Js = per_example_derivatives(loss, w, X, Y)
    for i in range(4):
        torch.testing.assert_close(Hs[i], torch.autograd.functional.hessian(lambda w: loss(w, X[i], Y[i]), w))
        gw = lambda x: torch.autograd.grad(loss(w.requires_grad_(), x, Y[i]), w, create_graph=True)[0]
        torch.testing.assert_close(Js[i], torch.autograd.functional.jacobian(gw, X[i]))
        w = w.detach()


def test_estimate_and_influence_point():
    A, B, Qr, Qn, _ = problem(seed=11)
    wbar = torch.arange(7., dtype=f64)
    mu = torch.tensor([1., 0., -1.], dtype=f64)
    S = solution_set_estimate(A, B, mu, wbar)
    wif = influence_point(A, B, mu, wbar)
    assert bool(S.contains(wif))
    torch.testing.assert_close(S.project(wbar), wif, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(influence_point(A, B, mu), wif - wbar)


def test_training_stability():
    A, B, Qr, Qn, _ = problem(seed=12)
    wbar = torch.zeros(7, dtype=f64)
    mu = torch.tensor([1., 2., 0.], dtype=f64)
    st = training_stability(A, B, mu, wbar, n=50, radius=None, generator=torch.Generator().manual_seed(0))
    exact = float(torch.linalg.vector_norm(torch.linalg.pinv(A) @ B @ mu))
    assert abs(st.distance - exact) < 1e-12 * exact
    assert st.samples.shape == (50, 7)
    assert float(st.sample_distances.min()) >= exact * (1 - 1e-12)
    assert float(st.sample_distances.max()) <= st.radius * (1 + 1e-12)
    assert bool(st.estimate.contains(st.samples).all())
    ref = st.samples + 1e-3 * Qr[:, 0]
    assert st.hausdorff is None
    st2 = training_stability(A, B, mu, wbar, n=5, radius=2 * exact, reference=ref, generator=torch.Generator().manual_seed(0))
    assert st2.hausdorff is not None and st2.hausdorff >= 1e-3 * (1 - 1e-9)
    with pytest.raises(ValueError, match='radius'):
        training_stability(A, B, mu, wbar, radius=0.5 * exact)


@pytest.mark.parametrize("call,name", [
    (lambda A, B, mu: graphical_derivative(A[:, :5], B, mu), 'dwR'),                     # non-square
    (lambda A, B, mu: graphical_derivative(A, B[:5], mu), 'dxR'),                       # rows mismatch
    (lambda A, B, mu: graphical_derivative(A, B, mu[:2]), 'mu'),                        # length
    (lambda A, B, mu: graphical_derivative(A, B, mu[None]), 'mu'),                      # ndim
    (lambda A, B, mu: graphical_derivative(A * float('nan'), B, mu), 'dwR'),            # NaN
    (lambda A, B, mu: graphical_derivative(A, B * float('inf'), mu), 'dxR'),            # Inf
    (lambda A, B, mu: graphical_derivative(A, B, mu * float('nan')), 'mu'),
    (lambda A, B, mu: graphical_derivative(A[:0, :0], B[:0], mu), 'dwR'),               # empty
    (lambda A, B, mu: graphical_derivative(A[0], B, mu), 'dwR'),                        # 1-D
    (lambda A, B, mu: graphical_derivative(A, B, mu, rtol=-1.), 'rtol'),
    (lambda A, B, mu: coderivative(A[:, :6], B, A[0]), 'dwR'),
    (lambda A, B, mu: coderivative(A, B, A[0, :5]), 'p'),
    (lambda A, B, mu: coderivative(A, B, A[0] * float('inf')), 'p'),
    (lambda A, B, mu: lipschitz_modulus(A[:6], B), 'dwR'),
    (lambda A, B, mu: lipschitz_modulus(A, B[:, :, None]), 'dxR'),
    (lambda A, B, mu: lipschitz_modulus(A, B * float('nan')), 'dxR'),
    (lambda A, B, mu: lipschitz_modulus(A, B.float()), 'dwR, dxR'),                    # dtype mismatch
    (lambda A, B, mu: solution_set_estimate(A, B, mu, torch.zeros(5, dtype=f64)), 'w_bar'),
    (lambda A, B, mu: influence_point(A, B, mu, torch.zeros(7, dtype=f64) * float('nan')), 'w_bar'),
])
def test_bad_input(call, name):
    A, B, *_ = problem()
    mu = torch.ones(3, dtype=f64)
    with pytest.raises(ValueError, match=name):
        call(A, B, mu)


def test_bad_input_types():
    A, B, *_ = problem()
    with pytest.raises(TypeError, match='dwR'):
        graphical_derivative(A.numpy(), B, torch.ones(3, dtype=f64))
    with pytest.raises(TypeError, match='mu'):
        graphical_derivative(A, B, torch.ones(3, dtype=torch.long))


def test_float32_follows_dtype():
    A, B, *_ = problem()
    D = graphical_derivative(A.float(), B.float(), torch.ones(3))
    assert D.point.dtype == torch.float32
    torch.testing.assert_close(D.point.double(), graphical_derivative(A, B, torch.ones(3, dtype=f64)).point, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Matrix-free: solution_shift / estimate_solution_set against an explicit Hessian + pinv oracle
# ---------------------------------------------------------------------------------------------
from torch import nn
from torch.func import functional_call


def twin_mlp(teacher=True, seed=7, n=6):
    "2-4-1 tanh net whose last two hidden units are twins (H singular beyond n < p); teacher labels → w̄ a minimiser."
    risk_mod = pytest.importorskip("setsens.risk")
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(3, 2, generator=g, dtype=f64)
    net = nn.Sequential(nn.Linear(2, 4, bias=False), nn.Tanh(), nn.Linear(4, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.cat([W0, W0[-1:]]))
        net[2].weight.copy_(torch.tensor([[0.8, -0.6, 0.5, 0.7]], dtype=f64))
    X = torch.randn(n, 2, generator=g, dtype=f64)
    with torch.no_grad():
        Y = net(X) if teacher else torch.randn(n, 1, generator=g, dtype=f64)
    return dense_oracle(risk_mod.Risk(net, "mse", X, Y), net, X, Y)


def dense_oracle(risk, net, X, Y):
    "Explicit mean-risk Hessian (p, p) and mixed derivative J (p, n, d) by autograd, independent of `Risk`."
    shapes = [(k, p.shape) for k, p in net.named_parameters()]
    w = torch.cat([p.detach().reshape(-1) for _, p in net.named_parameters()])

    def mean_risk(w, X):
        prm, i = {}, 0
        for k, s in shapes:
            prm[k] = w[i:i + s.numel()].reshape(s); i += s.numel()
        return (0.5 * (functional_call(net, prm, (X,)) - Y) ** 2).sum(1).mean()
    H = torch.autograd.functional.hessian(lambda w: mean_risk(w, X), w)
    J = torch.autograd.functional.jacobian(
        lambda X_: torch.autograd.functional.jacobian(lambda w_: mean_risk(w_, X_), w, create_graph=True), X)   # (p, n, d)
    return risk, w, X, H, J


class SumLinear(nn.Module):
    "A linear layer whose weight is A + B: a global translation symmetry, so ker H ⊇ {(E, −E)} at every w."
    def __init__(self, d_in, d_out, g):
        super().__init__()
        self.A = nn.Parameter(torch.randn(d_out, d_in, generator=g, dtype=f64))
        self.B = nn.Parameter(torch.randn(d_out, d_in, generator=g, dtype=f64))
    def forward(self, x): return x @ (self.A + self.B).T


def oracle_shift(H, J, DX):
    return -torch.linalg.pinv(H, hermitian=True) @ torch.einsum('pnd,nd->p', J, DX)


DX_K = torch.tensor([[1., -0.5], [0.3, 0.8]], dtype=f64)
K = [0, 3]


@pytest.mark.parametrize("solver", ["minres", "lsqr", "cgls"])
def test_solution_shift_vs_pinv(solver):
    from setsens.graphical import solution_shift
    risk, w, X, H, J = twin_mlp()
    assert int(torch.linalg.matrix_rank(H)) < risk.p
    DX = torch.zeros_like(X); DX[K] = DX_K * (X.shape[0] / len(K))
    ref = oracle_shift(H, J, DX)
    dw, info = solution_shift(risk, DX_K, idx=K, solver=solver, rtol=1e-12, maxiter=2000)
    assert bool(info.converged)
    torch.testing.assert_close(dw, ref, rtol=1e-6, atol=1e-8 * float(ref.norm()))


def test_solution_shift_indefinite_hessian():
    "Random labels: w̄ is not a minimiser; H is indefinite and singular (a global symmetry); MINRES still gives −H†JΔX."
    risk_mod = pytest.importorskip("setsens.risk")
    from setsens.graphical import solution_shift
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(SumLinear(2, 3, g), nn.Tanh(), nn.Linear(3, 1, bias=False)).double()
    X = torch.randn(5, 2, generator=g, dtype=f64); Y = torch.randn(5, 1, generator=g, dtype=f64)
    risk, w, X, H, J = dense_oracle(risk_mod.Risk(net, "mse", X, Y), net, X, Y)
    ev = torch.linalg.eigvalsh(H)
    assert float(ev.min()) < -1e-6 and int((ev.abs() < 1e-12).sum()) >= 6
    DX = torch.zeros_like(X); DX[K] = DX_K
    dw, info = solution_shift(risk, DX, weighting="mean", rtol=1e-12, maxiter=2000)
    ref = oracle_shift(H, J, DX)
    torch.testing.assert_close(dw, ref, rtol=1e-6, atol=1e-8 * float(ref.norm()))


def test_solution_shift_weighting_idx_and_batch():
    from setsens.graphical import solution_shift
    risk, w, X, H, J = twin_mlp()
    n = X.shape[0]
    eq14, _ = solution_shift(risk, DX_K, idx=K, rtol=1e-12)
    mean, _ = solution_shift(risk, DX_K, idx=K, weighting="mean", rtol=1e-12)
    torch.testing.assert_close(eq14, mean * n / len(K), rtol=1e-7, atol=1e-10)
    DX = torch.zeros_like(X); DX[K] = DX_K
    full, _ = solution_shift(risk, DX, rtol=1e-12)                 # K = the non-zero rows of dX
    torch.testing.assert_close(full, eq14, rtol=1e-7, atol=1e-10)
    # single point among n: eq. 14's shift is n × the mean-risk response
    one, _ = solution_shift(risk, DX_K[:1], idx=[2], rtol=1e-12)
    one_m, _ = solution_shift(risk, DX_K[:1], idx=[2], weighting="mean", rtol=1e-12)
    torch.testing.assert_close(one, n * one_m, rtol=1e-7, atol=1e-10)
    # all points perturbed: both weightings agree
    Dall = torch.randn(X.shape, generator=torch.Generator().manual_seed(1), dtype=f64)
    a, _ = solution_shift(risk, Dall, rtol=1e-12); b, _ = solution_shift(risk, Dall, weighting="mean", rtol=1e-12)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # a trailing batch axis solves column by column
    Db = torch.stack([DX_K, 2 * DX_K.flip(0)], -1)
    dwb, info = solution_shift(risk, Db, idx=K, rtol=1e-12)
    assert dwb.shape == (risk.p, 2)
    torch.testing.assert_close(dwb[:, 0], eq14, rtol=1e-7, atol=1e-10)
    ref1 = solution_shift(risk, 2 * DX_K.flip(0), idx=K, rtol=1e-12)[0]
    torch.testing.assert_close(dwb[:, 1], ref1, rtol=1e-7, atol=1e-10)


def test_estimate_solution_set_properties_and_dense_agreement():
    from setsens.graphical import estimate_solution_set, graphical_derivative, solution_shift
    risk, w, X, H, J = twin_mlp()
    n = X.shape[0]
    DX = torch.zeros_like(X); DX[K] = DX_K * (n / len(K))
    ref = oracle_shift(H, J, DX)
    pts, infos = estimate_solution_set(risk, DX_K, n=6, seed=3, idx=K, rtol=1e-12, maxiter=2000)
    assert pts.shape == (6, risk.p) and len(infos) == 6 and all(bool(i.converged) for i in infos)
    V = (pts - w).T
    b = -torch.einsum('pnd,nd->p', J, DX)
    torch.testing.assert_close(H @ V, b[:, None].expand_as(V), rtol=0, atol=1e-9)      # H v = −JΔX
    P = torch.linalg.pinv(H, hermitian=True) @ H                                       # projector onto range H
    torch.testing.assert_close(P @ V, ref[:, None].expand_as(V), rtol=0, atol=1e-8)     # differ only in ker H
    assert float(torch.linalg.vector_norm(V - ref[:, None], dim=0).min()) > 1e-3
    # the dense graphical derivative (explicit H, J) contains every point; its min-norm point is the pinv shift
    D = graphical_derivative(H, J.reshape(risk.p, -1), DX.reshape(-1))
    assert bool(D.contains(V.T).all())
    torch.testing.assert_close(D.point, ref, rtol=1e-9, atol=1e-12)
    assert D.dim == risk.p - int(torch.linalg.matrix_rank(H))
    # reproducible for a seed, different for another
    pts2, _ = estimate_solution_set(risk, DX_K, n=6, seed=3, idx=K, rtol=1e-12, maxiter=2000)
    torch.testing.assert_close(pts2, pts)
    pts3, _ = estimate_solution_set(risk, DX_K, n=6, seed=4, idx=K, rtol=1e-12, maxiter=2000)
    assert float((pts3 - pts).abs().max()) > 1e-3
    # x0_scale sets the spread of the kernel part
    pts4, _ = estimate_solution_set(risk, DX_K, n=200, seed=0, idx=K, x0_scale=1e-3, rtol=1e-12, maxiter=2000)
    assert float(torch.linalg.vector_norm(pts4 - (w + ref), dim=1).max()) < 1e-2


@pytest.mark.parametrize("kw,name", [
    (dict(dX=torch.ones(3, 2, dtype=f64), idx=[0, 1]), 'dX'),           # rows ≠ |K|
    (dict(dX=torch.ones(2, 3, dtype=f64), idx=[0, 1]), 'dX'),           # feature shape
    (dict(dX=torch.ones(5, 2, dtype=f64)), 'dX'),                       # not X-shaped
    (dict(dX=torch.ones(2, 2, dtype=f64), idx=[0, 9]), 'idx'),
    (dict(dX=torch.ones(2, 2, dtype=f64), idx=[1, 1]), 'idx'),
    (dict(dX=torch.ones(2, 2, dtype=f64) * float('nan'), idx=[0, 1]), 'dX'),
    (dict(dX=torch.ones(2, 2, dtype=f64), idx=[0, 1], weighting='sum'), 'weighting'),
    (dict(dX=torch.ones(2, 2, dtype=f64), idx=[0, 1], solver='cg'), 'solver'),
    (dict(dX=torch.ones(2, 2), idx=[0, 1]), 'dX'),                       # float32 vs float64 data
])
def test_solution_shift_bad_input(kw, name):
    from setsens.graphical import solution_shift
    risk, *_ = twin_mlp()
    with pytest.raises(ValueError, match=name):
        solution_shift(risk, **kw)


def test_estimate_solution_set_bad_input():
    from setsens.graphical import estimate_solution_set
    risk, *_ = twin_mlp()
    with pytest.raises(ValueError, match='n'):
        estimate_solution_set(risk, DX_K, n=0, seed=0, idx=K)
    with pytest.raises(ValueError, match='x0_scale'):
        estimate_solution_set(risk, DX_K, n=2, seed=0, idx=K, x0_scale=-1.)
    with pytest.raises(ValueError, match='dX'):
        estimate_solution_set(risk, DX_K[..., None], n=2, seed=0, idx=K)


def test_a_wrapper_object_is_refused_a_subclass_is_used():
    "A `__getattr__` wrapper overriding hvp would be solved with the inner risk's H: refused, naming risk; a subclass's hvp is the one solved with."
    import torch.nn as nn
    from setsens.risk import Risk
    from setsens.graphical import solution_shift, estimate_solution_set
    g = torch.Generator().manual_seed(0)
    m = nn.Linear(3, 1).double(); X = torch.randn(8, 3, generator=g, dtype=torch.float64); Y = torch.randn(8, generator=g, dtype=torch.float64)
    r = Risk(m, 'mse', X, Y)
    class Wrap:
        def __init__(s, r): s.r = r
        def __getattr__(s, k): return getattr(s.r, k)
        def hvp(s, V): return s.r.hvp(V) + V
    dX = torch.zeros_like(X); dX[0] = 1.
    for f in (lambda: solution_shift(Wrap(r), dX, check=False), lambda: estimate_solution_set(Wrap(r), dX, n=2, seed=0, check=False)):
        with pytest.raises(TypeError, match=r"^risk: expected a setsens.risk.Risk"): f()
    class Damped(Risk):
        def hvp(s, V): return super().hvp(V) + V
    rd = Damped(m, 'mse', X, Y)
    dw, _ = solution_shift(rd, dX, check=False, rtol=1e-12, weighting='mean')
    dw1, _ = solution_shift(r, dX, damping=1., check=False, rtol=1e-12, weighting='mean')
    assert torch.allclose(dw, dw1, rtol=1e-9, atol=1e-12)
