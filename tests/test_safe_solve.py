"""A solve that is safe by default (issue 13, item 6): a time budget that is kept and reported, non-convergence that
warns with the numbers reached, a dtype-aware default tolerance, a set-up check (stationarity, negative curvature, half
precision) and a progress bar that stays off in tests. Oracles: explicit float64 matrices, `torch.linalg.eigvalsh` and
`torch.linalg.pinv` of the explicit Hessian, residuals recomputed in float64."""
import math, re, sys, time, warnings
import pytest
import torch
from torch import nn

from setsens.krylov import minres, lsqr, cgls, _show_progress, _default_rtol
from setsens.graphical import solution_shift, estimate_solution_set, setup_check, SetupWarning
from setsens.risk import Risk

from problems import sym_matrix  # shared: tests/problems.py
f64 = torch.float64
SOLVERS = [minres, lsqr, cgls]


def sym(p, r, cond, seed, dtype=f64, indef=False):
    "A random symmetric p×p matrix of rank r (tests/problems.py's `sym_matrix`, this module's argument order)."
    return sym_matrix(p, r, cond, seed=seed, dtype=dtype, indef=indef)


def rhs(p, seed, dtype=f64):
    return torch.randn(p, generator=torch.Generator().manual_seed(seed), dtype=f64).to(dtype)


def rel_normres64(A, x, b):
    "‖A(Ax − b)‖/‖Ab‖ recomputed in float64 (independent of the solver's own residuals)."
    A, x, b = A.double(), x.double(), b.double()
    return float((A @ (A @ x - b)).norm() / (A @ b).norm())


# ---------------------------------------------------------------- the time budget
@pytest.mark.parametrize('solver', SOLVERS, ids=lambda s: s.__name__)
def test_time_budget_stops_within_it_and_says_so(solver):
    A, b = sym(80, 80, 1e6, 0), rhs(80, 1)
    dt = 0.02
    def slow(v):                                   # a product costs ≥ 20 ms: 0.3 s allow at most ~15 of them
        time.sleep(dt); return A @ v
    budget = 0.3
    with pytest.warns(RuntimeWarning, match=r'time budget of 0\.3 s spent') as rec:
        t0 = time.perf_counter()
        x, info = solver(slow, b, rtol=1e-14, maxiter=10_000, time_budget=budget)
        wall = time.perf_counter() - t0
    assert info.status == 'time_budget' and not bool(info.converged)
    assert 'time budget' in info.reason
    # stopped within the budget plus the iteration under way and the final true-residual check (≤ 4 products)
    assert wall <= budget + 4 * dt + 0.5, wall
    assert info.seconds <= wall + 1e-6 and info.seconds >= budget
    assert 1 <= info.iterations < 10_000
    assert f'after {info.iterations} iterations' in str(rec[0].message)
    # the returned x is a real iterate: its residual is what info says
    torch.testing.assert_close(info.normres, (A @ (A @ x - b)).norm(), rtol=1e-10, atol=1e-12)


def test_time_budget_in_solution_shift_and_set(monkeypatch):
    risk, *_ = quadratic_risk(eig=torch.logspace(0, -6, 12, dtype=f64))
    fast = risk.hvp
    def slow(V): time.sleep(0.01); return fast(V)     # the same risk, with a slow Hessian product (risk.H uses it)
    dX = torch.ones_like(risk.X)
    risk.jx(dX); risk.hvp(risk.w)                  # warm up torch.func (the first call costs seconds, before the solve)
    monkeypatch.setattr(risk, 'hvp', slow)
    with pytest.warns(RuntimeWarning, match='time budget'):
        t0 = time.perf_counter()
        dw, info = solution_shift(risk, dX, rtol=1e-15, maxiter=100_000, time_budget=0.2, check=False)
        wall = time.perf_counter() - t0
    assert info.status == 'time_budget' and wall < 0.2 + 0.5
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        t0 = time.perf_counter()
        pts, infos = estimate_solution_set(risk, dX, n=3, seed=0, rtol=1e-15, maxiter=100_000, time_budget=0.3,
                                           check=False)
        wall = time.perf_counter() - t0
    assert wall < 0.3 + 0.6                        # one budget for both solves (the x0_scale solve and the batched one)
    assert all(i.status == 'time_budget' for i in infos) and pts.shape == (3, risk.p)
    assert any('time budget' in str(w.message) for w in rec)


def test_time_budget_validated():
    A, b = sym(10, 10, 10., 0), rhs(10, 0)
    for bad in (0., -1., float('nan')):
        with pytest.raises(ValueError, match='time_budget'):
            minres(A, b, time_budget=bad)


# ---------------------------------------------------------------- non-convergence warns with the numbers
@pytest.mark.parametrize('solver', SOLVERS, ids=lambda s: s.__name__)
def test_nonconverged_warns_with_numbers(solver):
    A, b = sym(60, 40, 1e3, 9), rhs(60, 0)
    with pytest.warns(RuntimeWarning) as rec:
        x, info = solver(A, b, rtol=1e-12, maxiter=5)
    msg = str(rec[0].message)
    assert info.status == 'maxiter' and not bool(info.converged) and info.iterations == 5
    assert 'after 5 iterations' in msg and 'maxiter reached' in msg and 'rtol = 1e-12' in msg
    got = float(re.search(r'‖Aᵀr‖/‖Aᵀb‖ = ([0-9.e+-]+)', msg).group(1))
    want = rel_normres64(A, x, b)                   # recomputed from the returned x
    assert abs(got - want) <= 0.01 * want, (got, want)
    got_r = float(re.search(r'‖r‖/‖b‖ = ([0-9.e+-]+)', msg).group(1))
    want_r = float((A @ x - b).norm() / b.norm())
    assert abs(got_r - want_r) <= 0.01 * want_r, (got_r, want_r)
    assert abs(float(info.rel_normres) - want) <= 1e-10 * want
    with warnings.catch_warnings():                # warn=False: the same info, silently
        warnings.simplefilter('error')
        _, info2 = solver(A, b, rtol=1e-12, maxiter=5, warn=False)
    assert info2.status == 'maxiter'


def test_converged_info_fields():
    A, b = sym(40, 25, 100., 3, indef=True), rhs(40, 2)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        x, info = minres(A, b, rtol=1e-10)
    assert info.status == 'converged' and info.reason == 'converged' and info.seconds > 0 and info.rtol == 1e-10
    xs = torch.linalg.pinv(A, hermitian=True) @ b
    assert float((x - xs).norm()) <= 1e-7 * float(xs.norm())


# ---------------------------------------------------------------- the dtype-aware default tolerance
def test_default_rtol_values():
    assert _default_rtol(torch.float64) == 1e-6 and _default_rtol(torch.float32) == 1e-4
    A, b = sym(20, 20, 10., 0), rhs(20, 0)
    assert minres(A, b)[1].rtol == 1e-6                     # float64 keeps the old default: results unchanged
    assert minres(A.float(), b.float())[1].rtol == 1e-4


@pytest.mark.parametrize('solver', [minres, lsqr], ids=lambda s: s.__name__)
def test_float32_default_converges_without_warning(solver):
    "float32, rank-deficient, inconsistent, condition 100 of the nonzero part: the old fixed 1e-6 warned on every seed."
    old_warned = 0
    for seed in range(3):
        A, b = sym(200, 120, 1e2, seed, torch.float32), rhs(200, 10 + seed, torch.float32)
        with warnings.catch_warnings():
            warnings.simplefilter('error')          # no warning at all with the default
            x, info = solver(A, b)
        assert bool(info.converged) and info.rtol == 1e-4
        assert rel_normres64(A, x, b) <= 2e-4        # met, recomputed in float64 (float32 rounding of the check)
        # near the minimum-norm solution (the rank tolerance 1e-5 drops the float32 rounding of the zero eigenvalues)
        xs = torch.linalg.pinv(A.double(), hermitian=True, rtol=1e-5) @ b.double()
        assert float((x.double() - xs).norm()) <= 1e-2 * float(xs.norm())
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter('always')
            solver(A, b, rtol=1e-6, maxiter=2000)
        old_warned += any(issubclass(w.category, RuntimeWarning) for w in rec)
    assert old_warned == 3


# ---------------------------------------------------------------- half precision refused
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['float16', 'bfloat16'])
def test_half_precision_refused(dtype):
    A, b = sym(6, 6, 10., 0), rhs(6, 0)
    for s in SOLVERS:
        with pytest.raises(TypeError, match=f'half precision \\({re.escape(str(dtype))}\\)'):
            s(A.to(dtype), b.to(dtype))
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(5, 3, generator=g).to(dtype), torch.randn(5, 1, generator=g).to(dtype)
    risk = Risk(nn.Linear(3, 1).to(dtype), 'mse', X, Y)
    for call in (lambda: solution_shift(risk, X), lambda: solution_shift(risk, X, check=False),
                 lambda: estimate_solution_set(risk, X, n=2, seed=0), lambda: setup_check(risk)):
        with pytest.raises(TypeError, match=f'risk: half precision \\({re.escape(str(dtype))}\\)'):
            call()


# ---------------------------------------------------------------- the set-up check
def quadratic_risk(eig, seed=0, offset=0.):
    """R(w, X) = ½ wᵀAw − wᵀC vec(X) with A = Q diag(eig) Qᵀ: H = A, J = −C; w̄ = A†C vec(X̄) (+ offset·u) is stationary
    iff offset = 0 (C's range lies in range A). Returns (risk, A, C, explicit float64 Hessian by autograd)."""
    p = len(eig)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=f64))
    A = (Q * eig) @ Q.T; A = (A + A.T) / 2
    X = torch.randn(4, 3, generator=g, dtype=f64)
    C = A @ torch.randn(p, 12, generator=g, dtype=f64)          # range C ⊆ range A: a stationary point exists
    wbar = torch.linalg.pinv(A, hermitian=True) @ (C @ X.reshape(-1))
    u = A @ torch.randn(p, generator=g, dtype=f64); u = u / u.norm()
    w = wbar + offset * u
    fn = lambda prm, X, Y: 0.5 * prm['w'] @ (A @ prm['w']) - prm['w'] @ (C @ X.reshape(-1))
    risk = Risk.from_function(fn, {'w': w.clone()}, X)
    H = torch.autograd.functional.hessian(lambda v: fn({'w': v}, X, None), w)
    return risk, A, C, H


def setup_warnings(call):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        out = call()
    return [str(w.message) for w in rec if issubclass(w.category, SetupWarning)], out


def test_setup_check_silent_at_true_minimum():
    eig = torch.tensor([3., 2., 1., 0.5, 0.1, 0., 0.], dtype=f64)    # positive semidefinite, singular
    risk, A, C, H = quadratic_risk(eig)
    assert float(torch.linalg.eigvalsh(H)[0]) >= -1e-12                # the oracle: H ⪰ 0 ...
    assert float((A @ risk.w - C @ risk.X.reshape(-1)).norm()) <= 1e-12   # ... and ∇R(w̄) = Aw̄ − C vec(X̄) = 0
    dX = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=f64)
    msgs, (dw, info) = setup_warnings(lambda: solution_shift(risk, dX))
    assert msgs == [] and bool(info.converged)
    xs = -torch.linalg.pinv(H, hermitian=True) @ (-C @ dX.reshape(-1))   # H Δw = −J ΔX with J = −C
    torch.testing.assert_close(dw, xs, rtol=1e-6, atol=1e-8)
    msgs, _ = setup_warnings(lambda: estimate_solution_set(risk, dX, n=3, seed=0))
    assert msgs == []


def test_setup_check_warns_when_not_stationary():
    eig = torch.tensor([3., 2., 1., 0.5, 0.1, 0.], dtype=f64)
    risk, A, C, H = quadratic_risk(eig, offset=0.5)
    dX = 0.1 * torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=f64)
    gn = float((A @ risk.w - C @ risk.X.reshape(-1)).norm())            # ∇R(w̄) by hand
    bn = float((C @ dX.reshape(-1)).norm())                              # ‖J ΔX‖
    assert gn > 0.1 * bn
    msgs, _ = setup_warnings(lambda: solution_shift(risk, dX))
    assert len(msgs) == 1 and 'not a stationary point' in msgs[0]
    got = float(re.search(r'is ([0-9.e+-]+)× ‖J ΔX‖', msgs[0]).group(1))
    assert abs(got - gn / bn) <= 2e-3 * gn / bn
    msgs, _ = setup_warnings(lambda: estimate_solution_set(risk, dX, n=2, seed=0))
    assert len(msgs) == 1 and 'not a stationary point' in msgs[0]
    msgs, _ = setup_warnings(lambda: solution_shift(risk, dX, check=False))   # switched off
    assert msgs == []
    out = setup_check(risk, -risk.jx(dX), warn=False)
    assert out['not_stationary'] and abs(out['grad_norm'] - gn) <= 1e-10 * gn
    # a perturbation 100× larger makes the same gradient negligible: the criterion is relative to ‖J ΔX‖
    msgs, _ = setup_warnings(lambda: solution_shift(risk, 100 * dX))
    assert msgs == [] and gn < 0.1 * 100 * bn


def test_setup_check_warns_at_negative_curvature():
    eig = torch.tensor([3., 2., 1., 0.5, -0.4, 0.], dtype=f64)         # a saddle: stationary, indefinite
    risk, A, C, H = quadratic_risk(eig, seed=1)
    lam = torch.linalg.eigvalsh(H)                                       # the oracle
    assert float(lam[0]) < -1e-3 * float(lam[-1])
    dX = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=f64)
    msgs, (dw, info) = setup_warnings(lambda: solution_shift(risk, dX))
    assert len(msgs) == 1 and 'negative curvature' in msgs[0]
    out = setup_check(risk, warn=False)
    assert out['negative_curvature'] and out['lanczos_steps'] <= 6
    assert out['ritz_min'] >= float(lam[0]) - 1e-10                    # Ritz values lie inside the spectrum ...
    assert abs(out['ritz_min'] - float(lam[0])) <= 1e-8                 # ... and p = 6 ≤ 12 steps: exact here
    assert abs(out['ritz_max'] - float(lam[-1])) <= 1e-8
    # a negative eigenvalue at the rounding level of the largest is not "clearly negative"
    risk2, *_, H2 = quadratic_risk(torch.tensor([3., 2., 1., -1e-9, 0.], dtype=f64), seed=2)
    assert float(torch.linalg.eigvalsh(H2)[0]) < 0
    msgs, _ = setup_warnings(lambda: solution_shift(risk2, dX))
    assert msgs == []


def test_setup_check_on_a_network_saddle():
    "A tanh network with a zero output layer: H (explicit, float64, autograd) is indefinite; the check sees it."
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    with torch.no_grad():
        for prm in net.parameters(): prm.zero_()
        net[0].weight.copy_(torch.randn(4, 3, generator=g, dtype=f64))   # W1 ≠ 0, W2 = 0, biases 0
    X = torch.randn(8, 3, generator=g, dtype=f64)
    Y = torch.randn(8, 1, generator=g, dtype=f64)
    with torch.no_grad(): net[2].bias.fill_(float(Y.mean()))            # the output bias fits the mean: ∇_b R = 0
    risk = Risk(net, 'mse', X, Y)
    w = risk.w
    def R(v):
        prm = risk.unflatten(v)
        return (0.5 * (torch.func.functional_call(net, prm, (X,)) - Y) ** 2).sum(1).mean()
    H = torch.autograd.functional.hessian(R, w)
    lam = torch.linalg.eigvalsh(H)
    assert float(lam[0]) < -1e-3 * float(lam[-1])         # the oracle: clearly negative curvature
    out = setup_check(risk, warn=False, steps=risk.p)
    assert out['ritz_min'] >= float(lam[0]) - 1e-10 and abs(out['ritz_min'] - float(lam[0])) <= 1e-6
    assert out['negative_curvature']
    dX = torch.randn(8, 3, generator=g, dtype=f64)
    msgs, _ = setup_warnings(lambda: solution_shift(risk, dX, rtol=1e-8, maxiter=500, warn=False))
    assert any('negative curvature' in m for m in msgs)


# ---------------------------------------------------------------- progress
def test_progress_off_in_tests(capsys, monkeypatch):
    assert _show_progress(None) is False                 # PYTEST_CURRENT_TEST is set while a test runs
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
    assert _show_progress(None) is False                 # ... even on a terminal
    A, b = sym(30, 30, 10., 0), rhs(30, 0)
    minres(A, b); lsqr(A, b); cgls(A, b)
    assert capsys.readouterr().err == ''                 # nothing drawn by default
    for k in ('IN_TEST', 'CI', 'PYTEST_CURRENT_TEST'): monkeypatch.delenv(k, raising=False)
    assert _show_progress(None) is True                  # interactive terminal, no test/CI variable: on
    for k in ('IN_TEST', 'CI'):
        monkeypatch.setenv(k, '1'); assert _show_progress(None) is False; monkeypatch.delenv(k)
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: False, raising=False)
    assert _show_progress(None) is False                 # not interactive: off
    assert _show_progress(True) is True and _show_progress(False) is False
    with pytest.raises(TypeError, match='progress'): _show_progress('yes')


def test_progress_true_draws_a_bar(capsys):
    A, b = sym(30, 30, 10., 0), rhs(30, 0)
    x, info = minres(A, b, progress=True)
    err = capsys.readouterr().err
    assert 'minres' in err and 'it' in err
    x2, _ = minres(A, b, progress=False)
    assert capsys.readouterr().err == '' and torch.equal(x, x2)   # the bar changes nothing
