"""Helpers shared by the bad-input tests (tests/test_*_bad_inputs.py): the message matcher, skip marks and small fixtures."""
import re
from functools import lru_cache

import pytest
import torch
from torch import nn

from setsens.core import data_dir
from setsens.krylov import minres, lsqr, cgls

f64 = torch.float64
SOLVERS = [minres, lsqr, cgls]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="mixed-device cases need a CUDA device (none here); dtype mismatches are tested on the CPU")
DATA = data_dir(must_exist=False)
CKPT = 'resnet56-4bfd9763.th'
needs_data = pytest.mark.skipif(DATA is None or not (DATA/CKPT).is_file(),
                                reason='real data folder (../shared/data or SETSENS_DATA) not found')
E = re.escape


def raises(exc, msg):
    "pytest.raises with a literal (escaped) message fragment."
    return pytest.raises(exc, match=E(msg))


def finite_or_inf(t):
    "A documented degenerate result may be ±inf, never NaN."
    t = torch.as_tensor(t)
    return not bool(torch.isnan(t).any())


# ---------------------------------------------------------------- small fixtures (built once)

@lru_cache(None)
def cloud():
    return torch.randn(5, 3, dtype=f64, generator=torch.Generator().manual_seed(0))


from problems import mlp_risk  # noqa: F401 (re-exported: shared, tests/problems.py)


def mlp(dtype=f64):
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(dtype)


def XY():
    r = mlp_risk()
    return r.X, r.Y


def dense_pair():
    "∇_wR = diag(2, 1, 0) (singular), ∇_xR (3, 2) with range inside range ∇_wR, μ (2,)."
    A = torch.diag(torch.tensor([2., 1., 0.], dtype=f64))
    B = torch.tensor([[1., 2.], [0., -1.], [0., 0.]], dtype=f64)
    return A, B, torch.tensor([0.5, -1.], dtype=f64)


def sym_singular(p=8, r=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=f64))
    s = torch.linspace(1., 3., r, dtype=f64) * torch.tensor([1., -1.] * r, dtype=f64)[:r]
    return Q[:, :r] @ torch.diag(s) @ Q[:, :r].T, Q[:, r:]

def _bn(train=True, dropout=False):
    m = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.2) if dropout else nn.BatchNorm1d(3), nn.Linear(3, 1)).double()
    return m.train(train)
