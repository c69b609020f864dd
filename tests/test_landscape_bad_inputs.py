"""Bad input: landscape (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math

import pytest
import torch


from bad_inputs_common import _bn, f64, raises


# ================================================================ setsens.landscape

def _ls(fn, **kw):
    from setsens.landscape import loss_surface
    return loss_surface(fn, torch.zeros(3), torch.ones(3), torch.arange(3.), kw.pop('alphas', [0.]), kw.pop('betas', [0.]), progress=False, **kw)


LANDSCAPE_CASES = [
    ('loss-fn-batchnorm-train', lambda L: L.model_loss_fn(_bn().float()), ValueError, 'call model.eval() first'),
    ('betas-inf', lambda L: _ls(lambda w: w.sum(), betas=[math.inf]), ValueError, 'betas: contains NaN or Inf'),
    ('batch-size-0', lambda L: _ls(lambda w, X, Y: w.sum(), X=torch.zeros(2, 1), batch_size=0), ValueError, 'batch_size: must be >= 1'),
    ('shifts-one', lambda L: L.plane_from_shifts([torch.ones(3)]), ValueError, 'shifts: need at least 2 shifts'),
    ('direction-nan-params', lambda L: L.filter_normalized_direction({'a': torch.full((2, 2), math.nan)}), ValueError, "model_or_params['a']: contains NaN or Inf"),
    ('plane-coordinates-dtype', lambda L: L.plane_coordinates(torch.ones(3, dtype=f64), torch.ones(3), torch.arange(3.)), ValueError, 'points, d1: different dtypes'),
    # bug at the time of writing: a loss that is NaN on the plane fills the grid with NaN silently
    ('surface-nan-loss', lambda L: _ls(lambda w: w.sum() * math.nan), ValueError, 'NaN'),
]


@pytest.mark.parametrize('call,exc,msg', [c[1:] for c in LANDSCAPE_CASES], ids=[c[0] for c in LANDSCAPE_CASES])
def test_landscape_bad_input(call, exc, msg):
    import setsens.landscape as L
    with raises(exc, msg):
        call(L)
