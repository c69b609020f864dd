"""Bad input: sets (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math

import pytest
import torch

from setsens.sets import AffineSet, point_to_set_distance, excess, hausdorff

from bad_inputs_common import raises, cloud


# ================================================================ setsens.sets

SETS_CASES = [
    ('p2s-w-nan', lambda C: point_to_set_distance(C[0] * math.nan, C), ValueError, 'w: contains NaN or Inf'),
    ('p2s-empty-cloud', lambda C: point_to_set_distance(C[0], C[:0]), ValueError, 'C: is empty'),
    ('p2s-dtype-affine', lambda C: point_to_set_distance(C[0].float(), AffineSet(C[0], C[:2].T)), ValueError, 'w, C: different dtypes'),
    ('p2s-list', lambda C: point_to_set_distance(C[0].tolist(), C), TypeError, 'w: expected a torch.Tensor'),
    ('hausdorff-int', lambda C: hausdorff(C.long(), C), TypeError, 'C: expected a floating dtype'),
    ('hausdorff-inf', lambda C: hausdorff(C, C * math.inf), ValueError, 'D: contains NaN or Inf'),
    ('excess-f16-vs-f64', lambda C: excess(C.half(), C), ValueError, 'C, D: different dtypes'),
    ('affine-point-int', lambda C: AffineSet(torch.arange(3), C[:2].T), TypeError, 'point: expected a floating dtype'),
    ('affine-basis-inf', lambda C: AffineSet(C[0], C[:2].T * math.inf), ValueError, 'basis: contains NaN or Inf'),
    ('affine-sample-n-float', lambda C: AffineSet(C[0], C[:2].T).sample(2.5), ValueError, 'n: expected a positive int'),
    ('affine-sample-radius-nan', lambda C: AffineSet(C[0], C[:2].T).sample(2, radius=math.nan), ValueError, 'radius'),
    ('affine-sample-center-dtype', lambda C: AffineSet(C[0], C[:2].T).sample(2, center=C[1].float()), ValueError, 'center, point: different dtypes'),
    ('affine-project-nan', lambda C: AffineSet(C[0], C[:2].T).project(C[1] * math.nan), ValueError, 'w: contains NaN or Inf'),
    ('affine-distance-3d', lambda C: AffineSet(C[0], C[:2].T).distance(C[None]), ValueError, 'w: expected 1 or 2 dimensions'),
    # bugs at the time of writing: chunk_size is not validated (0, negatives, floats pass silently; a
    # string fails inside int() with a message that does not name it), contains() accepts atol < 0
    ('excess-chunk-size-0', lambda C: excess(C, C + 1, chunk_size=0), ValueError, 'chunk_size'),
    ('hausdorff-chunk-size-str', lambda C: hausdorff(C, C + 1, chunk_size='64'), TypeError, 'chunk_size'),
    ('affine-contains-negative-atol', lambda C: AffineSet(C[0], C[:2].T).contains(C[1], atol=-1.), ValueError, 'atol'),
]


@pytest.mark.parametrize('call,exc,msg', [c[1:] for c in SETS_CASES], ids=[c[0] for c in SETS_CASES])
def test_sets_bad_input(call, exc, msg):
    with raises(exc, msg):
        call(cloud())


@pytest.mark.parametrize('v', [1e19, 1e25])
def test_sets_large_float32_coordinates(v):
    """float32 clouds whose distance (2v) is far inside float32's range (3.4e38): the exact answer,
    not inf (1e19) or an internal unpacking error (1e25): the squared screening products overflow."""
    C = torch.tensor([[v, 0.]], dtype=torch.float32)
    D = torch.tensor([[-v, 0.], [0., 1.]], dtype=torch.float32)
    assert point_to_set_distance(C[0], D).item() == pytest.approx(v * math.sqrt(1 + 1 / v**2), rel=1e-6)
    assert hausdorff(C, D).item() == pytest.approx(2 * v, rel=1e-6)


def test_sets_delta_zero_sample_radius_zero():
    "δ = 0: a ball of radius 0 around a point of the set holds that point only."
    C = cloud()
    S = AffineSet(C[0], C[:2].T)
    pts = S.sample(3, radius=0.)
    assert torch.equal(pts, S.project(C[0]).expand(3, -1))
