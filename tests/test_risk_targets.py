"""Issue 15's fixes in `Risk` beyond tests/test_hostile.py: torch's elementwise losses with reduction='mean' in every HVP
mode (their mean is evaluated as the sum-reduced loss / elements, which also avoids torch 2.14's 'ZeroTensors are
immutable' in forward-over-reverse through F.mse_loss, pytorch#123996); class labels of other integer widths and
regression targets of the wrong shape coming from a data source; the advice when that forward-AD bug comes from a loss
Risk cannot rewrite. Every value is checked against plain torch (torch.func.hessian / grad of the loss on all rows)."""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian
from torch.utils.data import DataLoader, TensorDataset

from setsens.risk import Risk
from problems import flat_loss

f64 = torch.float64


def _problem(c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, c)).double().eval()
    return net, torch.randn(7, 3, dtype=f64, generator=g), g


ELEMENTWISE = {
    'MSELoss': (nn.MSELoss(), 'normal'),
    'F.mse_loss': (F.mse_loss, 'normal'),
    'partial(F.mse_loss)': (functools.partial(F.mse_loss, reduction='mean'), 'normal'),
    'L1Loss': (nn.L1Loss(), 'normal'),
    'SmoothL1Loss': (nn.SmoothL1Loss(beta=0.5), 'normal'),
    'BCEWithLogitsLoss': (nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2., 0.5], dtype=f64)), 'prob'),
    'F.binary_cross_entropy_with_logits': (F.binary_cross_entropy_with_logits, 'prob'),
}


@pytest.mark.parametrize('mode', ['rev_rev', 'fwd_rev', 'rev_rev_cached'])
@pytest.mark.parametrize('name', list(ELEMENTWISE))
def test_elementwise_mean_losses_in_every_mode(name, mode):
    "value, gradient and H·V (uneven chunks 3 + 3 + 1) equal the loss's own mean on all rows, by torch.func on plain ops."
    loss, kind = ELEMENTWISE[name]
    net, X, g = _problem()
    Y = torch.randn(7, 2, dtype=f64, generator=g) if kind == 'normal' else torch.rand(7, 2, dtype=f64, generator=g)
    R, w = flat_loss(net, loss, X, Y)
    r = Risk(net, loss, X, Y, batch_size=3, hvp_mode=mode, vectorize=True)
    assert r.reduction == 'mean'
    V = torch.randn(w.numel(), 3, dtype=f64, generator=g)
    torch.testing.assert_close(r.value(), R(w), rtol=1e-13, atol=0)
    torch.testing.assert_close(r.grad(), grad(R)(w), rtol=1e-11, atol=1e-13)
    HV = hessian(R)(w) @ V
    torch.testing.assert_close(r.hvp(V), HV, rtol=1e-10, atol=1e-12 * float(HV.abs().max()))


def test_mse_mean_fwd_rev_minimal_case_and_mixed_products():
    "The issue's case: nn.MSELoss() (mean) with hvp_mode='fwd_rev' — J·ΔX and Jᵀ·U too, against jacrev of the plain gradient."
    net, X, g = _problem()
    Y = torch.randn(7, 2, dtype=f64, generator=g)
    loss = nn.MSELoss()
    r = Risk(net, loss, X, Y, hvp_mode='fwd_rev')
    def gw(w, X_):
        R, _ = flat_loss(net, loss, X_, Y)
        return grad(R)(w)
    w = r.w
    J = torch.func.jacrev(gw, argnums=1)(w, X).reshape(w.numel(), -1)
    dX = torch.randn(7, 3, dtype=f64, generator=g)
    U = torch.randn(w.numel(), dtype=f64, generator=g)
    torch.testing.assert_close(r.jx(dX), J @ dX.reshape(-1), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(r.jxT(U), (J.T @ U).reshape(7, 3), rtol=1e-10, atol=1e-13)


def test_forward_ad_zero_tensor_bug_in_an_unrecognised_loss_gives_advice():
    """A hand-written loss that calls F.mse_loss's mean (declared reduction='mean') is not rewritten: with fwd_rev
    torch 2.14 raises 'ZeroTensors are immutable' (pytorch#123996); Risk says to use hvp_mode='rev_rev', with which
    the product is right."""
    net, X, g = _problem()
    Y = torch.randn(7, 2, dtype=f64, generator=g)
    mine = lambda out, y: F.mse_loss(out, y)
    V = torch.randn(sum(p.numel() for p in net.parameters()), dtype=f64, generator=g)
    try:
        Risk(net, mine, X, Y, reduction='mean', hvp_mode='fwd_rev').hvp(V)
    except RuntimeError as e:      # torch still has the bug: the message must say what to do
        assert "use hvp_mode='rev_rev'" in str(e) and 'pytorch#123996' in str(e), e
    R, w = flat_loss(net, mine, X, Y)
    r = Risk(net, mine, X, Y, reduction='mean', hvp_mode='rev_rev')
    torch.testing.assert_close(r.hvp(V), hessian(R)(w) @ V, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize('dtype', [torch.int32, torch.int16, torch.uint8, torch.bool], ids=str)
def test_class_labels_of_other_widths_from_a_data_source(dtype):
    "A DataLoader of (X, labels as int32/int16/uint8/bool): value and gradient are the cross-entropy of the long labels."
    net, X, g = _problem(c=2)
    Y = torch.randint(0, 2, (7,), generator=g)
    R, w = flat_loss(net, F.cross_entropy, X, Y)
    r = Risk(net, nn.CrossEntropyLoss(), DataLoader(TensorDataset(X, Y.to(dtype)), batch_size=3))
    torch.testing.assert_close(r.value(), R(w), rtol=1e-13, atol=0)
    torch.testing.assert_close(r.grad(), grad(R)(w), rtol=1e-11, atol=1e-13)
    assert r.Y.dtype == torch.long


def test_float_labels_and_broadcasting_targets_from_a_data_source_name_data():
    net, X, g = _problem(c=2)
    Y = torch.randint(0, 2, (7,), generator=g)
    with pytest.raises(TypeError, match=r"^data: 'cross_entropy' reads floating targets"):
        Risk(net, 'cross_entropy', DataLoader(TensorDataset(X, Y.double()), batch_size=3))
    net1, _, _ = _problem(c=1)
    with pytest.raises(ValueError, match=r"^data: target rows of shape \(\) against model output rows of shape \(1,\)"):
        Risk(net1, nn.L1Loss(), DataLoader(TensorDataset(X, torch.randn(7, dtype=f64)), batch_size=3))


def test_soft_labels_shaped_like_the_output_are_still_class_probabilities():
    "Floating targets shaped like the output (n, C) stay probabilities: the value equals torch's soft-label cross-entropy."
    net, X, g = _problem(c=3)
    P = torch.softmax(torch.randn(7, 3, dtype=f64, generator=g), 1)
    R, w = flat_loss(net, F.cross_entropy, X, P)
    torch.testing.assert_close(Risk(net, nn.CrossEntropyLoss(), X, P, batch_size=3).value(), R(w), rtol=1e-13, atol=0)
