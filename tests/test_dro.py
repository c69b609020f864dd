"""setsens.dro: Theorem 6.1's distributional AIF against the numerically solved EMP problem of Lemma 6.1 (float64, fixed seeds)."""
import math
import warnings
import pytest
import sympy as sp
import torch
from setsens.dro import (dro_weights, distributional_aif, emp_linear, emp_inner_pga, dro_linear_regression)
from setsens.dro_study import dro_finite_difference, dro_n_dependence, dro_study, _linear_problem
from setsens.aif import aif
from setsens.risk import Risk

F64 = torch.float64

def test_weights_are_hoelder_optimal():
    c = torch.tensor([3., 1., 2., .5, 2.5], dtype=F64)
    g = torch.Generator().manual_seed(0)
    for u in [1., 1.5, 2., 3., 7.]:
        w = dro_weights(c, u)
        assert torch.linalg.vector_norm(w, ord=u).item() == pytest.approx(1, rel=1e-13)
        us = u/(u - 1) if u > 1 else math.inf
        assert (w @ c).item() == pytest.approx(torch.linalg.vector_norm(c, ord=us).item(), rel=1e-12)   # Hölder equality
        for _ in range(300):
            v = torch.rand(5, generator=g, dtype=F64); v = v/torch.linalg.vector_norm(v, ord=u)
            assert (v @ c).item() <= (w @ c).item() + 1e-12
    assert dro_weights(c, 1).tolist() == [1., 0., 0., 0., 0.]
    assert dro_weights(c, math.inf).tolist() == [1.]*5
    assert dro_weights(c, 2., rule='theorem').tolist() == [1., 0., 0., 0., 0.]
    with pytest.warns(RuntimeWarning, match='tie'): dro_weights(torch.tensor([2., 2., 1.], dtype=F64), 1)

def test_factor_sympy():
    n, R, u = sp.symbols('n R u', positive=True)
    assert sp.simplify(sp.powsimp((n*R**u)**(1/u)/n/(R*n**((1 - u)/u)), force=True)) == 1

def test_emp_closed_form_against_projected_ascent():
    X, y, b, _ = _linear_problem(120, 1)
    s = X.norm(dim=1).mean().item()
    for u in [1, 2]:
        for beta in [b, b + .2]:
            for R in [2e-3*s, 4e-2*s]:
                cf = emp_linear(beta, X, y, R, 2, u).item()
                pga, D = emp_inner_pga(beta, X, y, R, u, starts=2, vertex_starts=3)
                assert cf*(1 - 1e-9) <= pga <= cf*(1 + 1e-12)
                if u == 2: assert D.norm().item() == pytest.approx(math.sqrt(120)*R, rel=1e-9)
                else: assert D.norm(dim=1).sum().item() == pytest.approx(120*R, rel=1e-9)

@pytest.mark.parametrize('u', [1, 2])
def test_distributional_aif_against_finite_differences(u):
    X, y, b, risk = _linear_problem(150, 2)
    n, s = X.shape[0], X.norm(dim=1).mean().item()
    D = dro_finite_difference(X, y, b, u)
    I, info = distributional_aif(risk, 2, u)
    assert info.converged and ((I - D).norm()/D.norm()).item() < 1e-4
    eta = y - X @ b; J = int(eta.abs().argmax()); Minv = torch.linalg.inv(X.T @ X/n)      # by hand, float64
    hand = (-Minv @ (s*(eta[J].abs()*b/b.norm() - b.norm()*torch.sign(eta[J])*X[J])) if u == 1
            else -Minv @ (s*(eta**2).mean().sqrt()*b/b.norm()))
    assert torch.allclose(I, hand, rtol=1e-9, atol=1e-12) and info.worst == J
    It, _ = distributional_aif(risk, 2, u, rule='theorem')
    if u == 1: assert torch.allclose(It, I, rtol=1e-12, atol=1e-14)
    else: assert ((It - D).norm()/D.norm()).item() > .5                 # eq. 8 as printed is not the DRO derivative

def test_u_infinity_is_the_plain_aif():
    X, y, b, risk = _linear_problem(80, 3)
    I, _ = distributional_aif(risk, 2, math.inf)
    assert torch.allclose(I, aif(risk, 2, method='dense')[0], rtol=1e-9, atol=1e-12)

def test_n_dependence_u2():
    nd = dro_n_dependence((40, 640), fd_at=(40,), seeds=3)
    assert nd['exact'].max()/nd['exact'].min() < 1.5 and nd['theorem'][1] < .6*nd['theorem'][0]
    assert nd['fd'][40] == pytest.approx(nd['exact_seed0'][0], rel=1e-4)

def test_dro_fit_converges_and_is_stationary():
    X, y, b, _ = _linear_problem(100, 4)
    for u in [1, 2, math.inf]:
        beta, info = dro_linear_regression(X, y, 1e-2, 2, u)
        assert info.converged and info.grad_norm < 1e-12
        R = info.radius
        assert info.value <= emp_linear(beta + 1e-4*torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(0)), X, y, R, 2, u).item()

def test_dro_study_quick():
    res = dro_study(quick=True)
    assert res[0].within and res[1].within and not res[2].within

def test_bad_inputs():
    X, y, b, risk = _linear_problem(20, 5)
    with pytest.raises(ValueError, match='u'): distributional_aif(risk, 2, .5)
    with pytest.raises(ValueError, match='p'): distributional_aif(risk, .5, 1)
    with pytest.raises(ValueError, match='rule'): distributional_aif(risk, 2, 1, rule='other')
    with pytest.raises(ValueError, match='u'): emp_linear(b, X, y, .1, 2, 3)
    with pytest.raises(ValueError, match='eps'): dro_linear_regression(X, y, -1.)
    lin = torch.nn.Linear(3, 1, bias=False).double(); lin.weight.data.zero_()
    zero = Risk(lin, lambda o, t: (o.squeeze(-1) - t)**2, X, y)   # β = 0: every ∇_x l vanishes
    with pytest.raises(ValueError, match='vanishes'): distributional_aif(zero, 2, 1)

# --- a sharded risk gives the unsharded distributional AIF (the weights from every shard's c_i, J on any rank) ---

def _sharded_daif(rank, world, sizes, n=40, seed=6):
    "distributional_aif for u = 1, 2, ∞ on rank `rank`'s shard of `_linear_problem(n, seed)` (run on every rank)."
    from setsens.distributed import DistributedRisk, shard
    X, y, b, risk = _linear_problem(n, seed)
    loc = Risk(risk.model, lambda o, t: (o.squeeze(-1) - t)**2, shard(X, rank, world, sizes), shard(y, rank, world, sizes))
    dr = DistributedRisk(loc)
    out = {}
    for u in (1, 2, math.inf):
        I, info = distributional_aif(dr, 2, u, rtol=1e-12)
        out[f'I{u}'], out[f'w{u}'] = I, info.weights
        out[f'J{u}'], out[f'scale{u}'], out[f'conv{u}'] = (torch.tensor(info.worst), torch.tensor(info.scale, dtype=F64),
                                                       torch.tensor(info.converged))
    return out

def test_sharded_equals_unsharded():
    from setsens.distributed import spawn_loopback
    X, y, b, risk = _linear_problem(40, 6)
    J = int((y - X @ b).abs().argmax())
    assert 0 < J < 39                                   # so that the split below puts J first on rank 1
    for world, sizes in [(2, [J, 40 - J]), (3, [7, 21, 12])]:
        multi = spawn_loopback(_sharded_daif, world, sizes)
        for u in (1, 2, math.inf):
            I, info = distributional_aif(risk, 2, u, rtol=1e-12)
            assert bool(multi[f'conv{u}']) and info.converged
            scale = float(I.abs().max())
            torch.testing.assert_close(multi[f'I{u}'], I, rtol=0, atol=1e-10*scale, msg=f'u = {u}, world {world}')
            torch.testing.assert_close(multi[f'w{u}'], info.weights, rtol=0, atol=1e-14)
            assert int(multi[f'J{u}']) == info.worst == J
            assert float(multi[f'scale{u}']) == pytest.approx(X.norm(dim=1).mean().item(), rel=1e-14)

def test_solve_reads_only_the_weighted_rows(monkeypatch):
    "u = 1 (and rule='theorem') perturbs the worst point alone: `aif`'s solve gets one row and idx = [J], not an X-shaped ΔX."
    import setsens.dro as D   # dro imports aif's `aif_shift` at module level: spy on its binding there
    X, y, b, risk = _linear_problem(30, 7)
    J = int((y - X @ b).abs().argmax())
    seen, orig = [], D.aif_shift
    def spy(risk, dX, *args, **kw):
        seen.append((tuple(dX.shape), list(kw.get('idx'))))
        return orig(risk, dX, *args, **kw)
    monkeypatch.setattr(D, 'aif_shift', spy)
    distributional_aif(risk, 2, 1); distributional_aif(risk, 2, 2, rule='theorem'); distributional_aif(risk, 2, 2)
    assert seen == [((1, 3), [J]), ((1, 3), [J]), ((30, 3), list(range(30)))]
