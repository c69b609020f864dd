"""Small problems shared by several test modules."""
from functools import lru_cache
import torch
from torch import nn

f64 = torch.float64

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
