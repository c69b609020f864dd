"""setsens.losses: the loss rules against torch's own reductions, and the names that moved keep importing from risk."""
import functools
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from setsens.losses import LOSSES, mse, cross_entropy, class_loss, elementwise_sum, target_count, stated_reduction

F64 = torch.float64


@pytest.mark.parametrize('loss', [nn.CrossEntropyLoss(), nn.CrossEntropyLoss(weight=torch.tensor([1., 2., .5], dtype=F64)),
                                  nn.NLLLoss(ignore_index=1), functools.partial(F.cross_entropy, label_smoothing=0.1),
                                  nn.CrossEntropyLoss(weight=torch.tensor([1., 0., 3.], dtype=F64), ignore_index=0)])
def test_class_loss_sum_over_count_is_torchs_mean(loss):
    g = torch.Generator().manual_seed(1)
    out, y = torch.randn(20, 3, generator=g, dtype=F64).log_softmax(1), torch.randint(0, 3, (20,), generator=g)
    s, w, ii = class_loss(loss)
    assert float(s(out, y)/target_count(y, w, ii)) == pytest.approx(float(loss(out, y)), rel=1e-13)


@pytest.mark.parametrize('loss', [nn.MSELoss(), nn.L1Loss(), nn.HuberLoss(delta=0.3), nn.SmoothL1Loss(),
                                  functools.partial(F.mse_loss), nn.BCEWithLogitsLoss()])
def test_elementwise_sum_over_elements_is_torchs_mean(loss):
    g = torch.Generator().manual_seed(2)
    out, y = torch.randn(6, 4, generator=g, dtype=F64), torch.rand(6, 4, generator=g, dtype=F64)
    assert float(elementwise_sum(loss)(out, y)/out.numel()) == pytest.approx(float(loss(out, y)), rel=1e-13)
    assert stated_reduction(loss)[0] == 'mean'


def test_builtin_losses():
    out, y = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    assert torch.allclose(mse(out, y), 0.5*((out - y)**2).sum(1), rtol=1e-15, atol=0)
    lab = torch.tensor([0, 1, 1, 0, 1])
    assert torch.equal(cross_entropy(out, lab), F.cross_entropy(out, lab, reduction='none'))
    assert LOSSES == {'mse': mse, 'cross_entropy': cross_entropy}


def test_moved_names_still_import_from_risk():
    import setsens.risk as risk
    from setsens.risk import LOSSES as L2
    assert L2 is LOSSES
    ns = {}
    exec('from setsens.risk import *', ns)
    assert all(k in ns for k in ('LOSSES', 'Risk', 'BaseRisk', 'check_eval_mode', 'LinearOperator', 'HessianOperator',
                                 'MixedOperator', 'IdentityOperator'))
