"""Bad input: devices (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""

import pytest
import torch

from setsens.sets import excess
from setsens.krylov import minres
from setsens.graphical import graphical_derivative

from bad_inputs_common import f64, needs_cuda, cloud, mlp, XY, dense_pair, mlp_risk


# ================================================================ mixed devices (CUDA only)

@needs_cuda
@pytest.mark.parametrize('case', ['sets', 'krylov', 'graphical', 'risk', 'risk-hvp'])
def test_mixed_devices(case):
    C = cloud()
    A, B, mu = dense_pair()
    with pytest.raises(ValueError, match='different devices'):
        if case == 'sets': excess(C, C.cuda())
        elif case == 'krylov': minres(A, (A @ torch.ones(3, dtype=f64)).cuda())
        elif case == 'graphical': graphical_derivative(A, B.cuda(), mu)
        elif case == 'risk':
            from setsens.risk import Risk
            X, Y = XY()
            Risk(mlp(), 'mse', X.cuda(), Y.cuda())
        else: mlp_risk().hvp(torch.ones(13, dtype=f64, device='cuda'))
