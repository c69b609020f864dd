"""Issue 14 §2: inputs validated once per public call. `risk.hvp(V)` scans V for NaN/Inf; `risk.H @ V`, applied once per
Krylov iteration, does not (the solver validated b), and gives the same bits. Oracles: the public `hvp` and the
explicit Hessian (`torch.func.hessian`) in float64."""
import pytest
import torch
from torch import nn
import setsens.risk as R, setsens.risk_checks as RC
from setsens.risk import Risk
from setsens.krylov import minres

f64 = torch.float64


def _risk(**kw):
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for prm in net.parameters(): prm.copy_(torch.randn(prm.shape, generator=g, dtype=f64))
    X, Y = torch.randn(9, 3, generator=g, dtype=f64), torch.randn(9, 2, generator=g, dtype=f64)
    return Risk(net, 'mse', X, Y, **kw), net, X, Y


@pytest.mark.parametrize('kw', [{}, dict(batch_size=4), dict(hvp_mode='fwd_rev'), dict(hvp_mode='rev_rev_cached'),
                                dict(vectorize=True, batch_size=5)], ids=str)
def test_operator_bit_identical_to_public_hvp_and_right(kw):
    risk, net, X, Y = _risk(**kw)
    V = torch.randn(risk.p, 3, generator=torch.Generator().manual_seed(1), dtype=f64)
    for v in (V, V[:, 0]):
        assert torch.equal(risk.H @ v, risk.hvp(v))
        assert torch.equal((risk.H + 0.5*risk.I) @ v, risk.hvp(v) + 0.5*v)
    names, shapes = zip(*[(k, p.shape) for k, p in net.named_parameters()])
    def loss(w):
        ps, i = {}, 0
        for k, s in zip(names, shapes): ps[k] = w[i:i + s.numel()].reshape(s); i += s.numel()
        return ((torch.func.functional_call(net, ps, (X,)) - Y)**2).mean()
    H = torch.func.hessian(loss)(risk.w)
    torch.testing.assert_close(risk.H @ V, H @ V, rtol=1e-12, atol=1e-12)


def test_solve_does_not_scan_iterates_public_hvp_does(monkeypatch):
    risk, *_ = _risk()
    calls = []
    real = R.check_tensor
    for mod in (R, RC):                                                # wherever the risk validates its inputs
        monkeypatch.setattr(mod, 'check_tensor', lambda x, name, *a, **k: (calls.append(name), real(x, name, *a, **k))[1])
    b = risk.grad()
    x, info = minres(risk.H, -b, rtol=0., maxiter=10, warn=False)
    assert info.iterations == 10 and 'V' not in calls                 # no scan of V inside the solve
    risk.hvp(b); risk.hvp(b)
    assert calls.count('V') == 2                                       # one per public call
    x2, _ = minres(lambda v: risk.hvp(v), -b, rtol=0., maxiter=10, warn=False)
    assert torch.equal(x, x2)                                          # the same iterates, bit for bit


def test_nonfinite_input_still_named():
    risk, *_ = _risk()
    V = torch.ones(risk.p, dtype=f64); V[2] = float('inf')
    for f in (risk.hvp, lambda v: risk.H @ v, lambda v: (risk.H + risk.I) @ v):
        with pytest.raises(ValueError, match='V: contains NaN or Inf'): f(V)


def test_replaced_hvp_is_what_H_applies():
    risk, *_ = _risk()
    V = torch.randn(risk.p, dtype=f64)
    risk.hvp = lambda v: 2*v                                           # an instance override
    assert torch.equal(risk.H @ V, 2*V)
    class Twice(Risk):                                                 # a subclass override
        def hvp(self, V): return 2*super().hvp(V)
    _, net, X, Y = _risk()
    r2 = Twice(net, 'mse', X, Y)
    del risk.hvp
    assert torch.equal(r2.H @ V, 2*risk.hvp(V))
