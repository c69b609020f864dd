"Issue 13's done-when: a risk over a DataLoader gives the in-memory answer for the solves too (solution_shift, the AIF, its interval)."
import pytest, torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from setsens.risk import Risk
from setsens.graphical import solution_shift
from setsens.aif import aif, aif_confidence_interval


@pytest.fixture(scope='module')
def pair():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    X = torch.randn(11, 3, generator=g, dtype=torch.float64); Y = torch.randn(11, 1, generator=g, dtype=torch.float64)
    return Risk(m, 'mse', X, Y), Risk(m, 'mse', DataLoader(TensorDataset(X, Y), batch_size=4)), X   # 4 + 4 + 3 rows


def _rel(a, b): return float((a - b).norm()/b.norm())


def test_products_equal(pair):
    r, s, X = pair
    V = torch.randn(r.p, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dX = torch.randn(*X.shape, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert _rel(s.grad(), r.grad()) < 1e-12 and _rel(s.hvp(V), r.hvp(V)) < 1e-12
    assert _rel(s.jx(dX), r.jx(dX)) < 1e-12 and _rel(s.jxT(V), r.jxT(V)) < 1e-12


def test_solution_shift_equal(pair):
    r, s, X = pair
    dX = torch.zeros_like(X); dX[[1, 9]] = torch.tensor([[1., -2., .5], [0., 1., 1.]], dtype=torch.float64)
    a, ia = solution_shift(r, dX, weighting='mean', damping=0.1, rtol=1e-13, check=False)
    b, ib = solution_shift(s, dX, weighting='mean', damping=0.1, rtol=1e-13, check=False)
    assert ia.status == ib.status == 'converged'
    assert _rel(b, a) < 1e-10      # the products agree to 1e-12; the solve (condition ~1e2 here) to 1e-10


def test_aif_and_interval_equal(pair):
    r, s, X = pair
    a, _ = aif(r, p=2, damping=0.1, rtol=1e-13); b, _ = aif(s, p=2, damping=0.1, rtol=1e-13)
    assert _rel(b, a) < 1e-10
    ci_r = aif_confidence_interval(r, p=2, damping=0.1, rtol=1e-13)
    ci_s = aif_confidence_interval(s, p=2, damping=0.1, rtol=1e-13)
    for k in ('center', 'lower', 'upper', 'stderr'):
        assert _rel(getattr(ci_s, k), getattr(ci_r, k)) < 1e-9, k
