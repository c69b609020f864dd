"""Small problems shared by several test modules."""
from functools import lru_cache
import torch
from torch import nn

f64 = torch.float64


def flat_loss(net, loss, X, Y):
    "R(w) = loss(net(X; w), Y) on all rows as a function of the flat parameters (named_parameters order), and w itself: plain torch, independent of setsens."
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    def R(w):
        prm = dict(zip(names, (t.reshape(s) for t, s in zip(w.split([s.numel() for s in shapes]), shapes))))
        return loss(torch.func.functional_call(net, prm, (X,)), Y)
    return R, torch.cat([p.detach().reshape(-1) for p in net.parameters()])

@lru_cache(None)
def mlp_risk(dtype=f64):
    "A 2-3-1 tanh MLP on 6 points (float64 values, cast to `dtype`): singular-ish, indefinite Hessian (λ_min ≈ −0.507)."
    from setsens.risk import Risk
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        for prm in net.parameters(): prm.copy_(torch.randn(prm.shape, generator=g, dtype=f64))
    X = torch.randn(6, 2, generator=g, dtype=f64)
    Y = torch.randn(6, 1, generator=g, dtype=f64)
    return Risk(net.to(dtype), 'mse', X.to(dtype), Y.to(dtype))


def sym_matrix(p, r, cond=100., *, seed=0, dtype=f64, indef=False):
    """A Hessian-like matrix: random symmetric p×p of rank r (built in float64, exactly symmetric, then cast to `dtype`),
    nonzero |eigenvalues| log-spaced in [1/cond, 1]; `indef`: each of them negated with probability ½ (seeded)."""
    import math
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=f64))
    lam = torch.zeros(p, dtype=f64)
    lam[:r] = torch.logspace(0, -math.log10(cond), r, dtype=f64)
    if indef: lam[:r] *= torch.where(torch.rand(r, generator=g) < 0.5, -1., 1.).double()
    A = (Q*lam) @ Q.T
    return ((A + A.T)/2).to(dtype)
