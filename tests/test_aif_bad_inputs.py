"""Bad input: aif (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math, warnings

import pytest
import torch


from setsens.robust import robust_fit
from bad_inputs_common import f64, raises, mlp_risk


# ================================================================ setsens.aif (once it exists)

def _aif():
    return pytest.importorskip('setsens.aif', reason='setsens.aif not exported yet')


@pytest.mark.parametrize('p', [0.5, 0, -1, math.nan, -math.inf], ids=['0.5', '0', '-1', 'nan', '-inf'])
def test_adversarial_direction_p_outside_range(p):
    A = _aif()
    with raises(ValueError, 'p:'):
        A.adversarial_direction(torch.ones(3, 2, dtype=f64), p)


def test_adversarial_direction_bad_grad():
    A = _aif()
    with raises(ValueError, 'grad_x: contains NaN or Inf'):
        A.adversarial_direction(torch.full((3, 2), math.nan, dtype=f64), 2)
    with raises(TypeError, 'p:'):
        A.adversarial_direction(torch.ones(3, 2, dtype=f64), [2])


@pytest.mark.parametrize('p', [1, 1.5, 2, math.inf])
def test_adversarial_direction_zero_gradient_documented(p):
    "A zero input gradient gets φ_i = 0 (documented); the other rows have ‖φ_i‖_p = 1. No NaN."
    A = _aif()
    G = torch.tensor([[0., 0., 0.], [3., -4., 0.], [1e-300, 0., -1e-300]], dtype=f64)
    phi = A.adversarial_direction(G, p)
    assert bool(torch.isfinite(phi).all())
    assert torch.equal(phi[0], torch.zeros(3, dtype=f64))
    nrm = torch.linalg.vector_norm(phi[1:], ord=p, dim=1)
    torch.testing.assert_close(nrm, torch.ones(2, dtype=f64), rtol=1e-12, atol=0)
    assert float(phi[1] @ G[1]) > 0


def test_aif_zero_input_gradients_documented():
    """At a zero-loss fit every ∇_x l_i = 0: Theorem 4.1 excludes this; `aif` documents φ_i = 0, a
    RuntimeWarning naming the examples and Î = 0 (no NaN)."""
    A = _aif()
    from setsens.risk import Risk
    r = mlp_risk()
    with torch.no_grad(): Y = r.model(r.X)
    rz = Risk(r.model, 'mse', r.X, Y)
    with pytest.warns(RuntimeWarning, match='have ∇_x l = 0'):
        I, info = A.aif(rz, 2)
    assert torch.equal(I, torch.zeros(r.p, dtype=f64))
    assert info.zero_grad.tolist() == list(range(6)) and torch.equal(info.phi, torch.zeros_like(r.X))


def test_aif_bad_args():
    A = _aif()
    r = mlp_risk()
    with raises(ValueError, 'p:'):
        A.aif(r, 0.5)
    with raises(ValueError, 'eps'):
        A.model_sensitivity(r, eps=-1.)
    with raises(ValueError, 'eps'):
        robust_fit(r, -1.)
    with raises(ValueError, 'maxiter'):
        A.aif(r, 2, maxiter=0)
    with raises(ValueError, 'damping: must be >= 0'):
        A.aif(r, 2, damping=-1.)
    with raises(ValueError, "method: expected 'krylov' or 'dense'"):
        A.aif(r, 2, method='qr')
    with raises(ValueError, 'x0: expected shape (13,)'):
        A.aif(r, 2, x0=torch.zeros(3, dtype=f64))
    with raises(ValueError, 'level: must be in (0, 1)'):
        A.aif_confidence_interval(r, 2, level=1.5)


def test_aif_delta_zero():
    "δ = 0 (attack radius scale 0): Î = 0 exactly, converged, no warning."
    A = _aif()
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        I, info = A.aif(mlp_risk(), 2, scale=0.)
    assert torch.equal(I, torch.zeros(13, dtype=f64)) and info.converged


def test_aif_negative_zero_tol():
    "A negative zero_tol is accepted silently at the time of writing (minor): it should be refused."
    A = _aif()
    with raises(ValueError, 'zero_tol:'):
        A.aif(mlp_risk(), 2, zero_tol=-1.)
