"""Bad input: dfcnn (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math, warnings
from functools import lru_cache

import pytest
import torch


from bad_inputs_common import f64, raises, finite_or_inf


# ================================================================ setsens.dfcnn, setsens.dfcnn_checks

@lru_cache(None)
def dfcnn():
    from setsens.dfcnn import trained_dfcnn
    return trained_dfcnn(3, 4, 2, 5, seed=0)


def _dfcnn_case(f):
    import setsens.dfcnn as D, setsens.dfcnn_checks as C
    net, X, y, _ = dfcnn()
    return f(D, C, net, X, y)


DFCNN_CASES = [
    ('k-empty', lambda D, C, net, X, y: D.layer_lipschitz_modulus(net, X, [], 1), ValueError, 'k: empty index set'),
    ('h-0', lambda D, C, net, X, y: D.layer_lipschitz_modulus(net, X, 0, 0), ValueError, 'h: layer 0 out of range 1..2'),
    ('X-float32', lambda D, C, net, X, y: D.layer_gram(net, X.float()), ValueError, 'X, model: different dtypes'),
    ('y-nan', lambda D, C, net, X, y: D.fit_zero_loss(net, X, y * math.nan), ValueError, 'y: contains NaN or Inf'),
    ('width-0', lambda D, C, net, X, y: D.DFCNN(3, 0, 2), ValueError, 'm: expected a positive int'),
    # bugs at the time of writing: negative max_iter / damping pass silently; a wrongly sized or
    # float32 layer vector fails with torch's bare RuntimeError; δ = 0 (sizes=(0,)) divides by zero
    ('fit-max-iter-negative', lambda D, C, net, X, y: D.fit_zero_loss(D.DFCNN(3, 4, 2, dtype=f64), X, y, max_iter=-1), ValueError, 'max_iter:'),
    ('fit-damping-negative', lambda D, C, net, X, y: D.fit_zero_loss(D.DFCNN(3, 4, 2, dtype=f64), X, y, damping=-1.), ValueError, 'damping:'),
    ('layer-jacobian-w-size', lambda D, C, net, X, y: C.layer_jacobian(net, X, 1, torch.ones(5, dtype=f64)), ValueError, 'w:'),
    ('solution-set-w-float32', lambda D, C, net, X, y: C.solution_set(net, X, 1, torch.ones(12)), ValueError, 'w:'),
    ('inclusion-size-0', lambda D, C, net, X, y: C.inclusion_check(net, X, y, 0, 1, sizes=(0.,), n_samples=2), ValueError, 'sizes:'),
]


@pytest.mark.parametrize('call,exc,msg', [c[1:] for c in DFCNN_CASES], ids=[c[0] for c in DFCNN_CASES])
def test_dfcnn_bad_input(call, exc, msg):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        with raises(exc, msg):
            _dfcnn_case(call)


def test_dfcnn_point_without_gradient_no_silent_nan():
    """A data point at the origin has ∇_x f = 0 and ∇_W f = 0 (every unit at its kink): Theorem 2's
    ratio is 0/0. It must be a documented value or an error, not NaN (NaN at the time of writing)."""
    from setsens.dfcnn import theorem2_kappa
    net, X, y, _ = dfcnn()
    X0 = X.clone(); X0[0] = 0.
    try:
        k = theorem2_kappa(net, X0, 0, 1)
    except ValueError as e:
        assert 'k' in str(e) or 'X' in str(e)
    else:
        assert finite_or_inf(k), f'theorem2_kappa returned {k}'
