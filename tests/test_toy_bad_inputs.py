"""Bad input: toy (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math

import pytest
import torch


from setsens import toy_study as TS
from bad_inputs_common import f64, raises


# ================================================================ setsens.toy

TOY_CASES = [
    ('hyperbola-c-0', lambda T: T.hyperbola_distance(torch.ones(2, dtype=f64), 0.), ValueError, 'c: must be > 0'),
    ('hyperbola-W-nan', lambda T: T.hyperbola_distance(torch.full((2,), math.nan, dtype=f64), 1.), ValueError, 'W: contains NaN or Inf'),
    ('analysis-radius-misses', lambda T: TS.toy_analysis(radius=0.1), ValueError, 'radius: the ball B(w̄, 0.1) misses the estimated set'),
    ('analysis-n-0', lambda T: TS.toy_analysis(n=0), ValueError, 'n: need at least one sample'),
    ('loss-reduction', lambda T: T.toy_loss(torch.ones(2, dtype=f64), torch.ones(2, dtype=f64), reduction='max'), ValueError, "reduction: expected 'sum' or 'mean'"),
    # bugs at the time of writing: wrong lengths fail inside torch (x, W) or pass silently and return a
    # wrongly shaped matrix (w of length 3); x = 0 gives c(x) = 0/0 = NaN silently
    ('derivatives-x-length-3', lambda T: T.toy_derivatives(torch.ones(3, dtype=f64)), ValueError, 'x:'),
    ('derivatives-w-length-3', lambda T: T.toy_derivatives(None, torch.ones(3, dtype=f64)), ValueError, 'w:'),
    ('hyperbola-W-length-3', lambda T: T.hyperbola_distance(torch.ones(3, dtype=f64), 1.), ValueError, 'W:'),
    ('solution-constant-x-0', lambda T: T.toy_solution_constant(torch.zeros(2, dtype=f64)), ValueError, 'x:'),
]


@pytest.mark.parametrize('call,exc,msg', [c[1:] for c in TOY_CASES], ids=[c[0] for c in TOY_CASES])
def test_toy_bad_input(call, exc, msg):
    import setsens.toy as T
    with raises(exc, msg):
        call(T)
