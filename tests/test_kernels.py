"""setsens.kernels: the NTK and its derivatives, kernel ridge (eq. 7), Corollary 6.1 against sympy, the engine and the robust fit (float64)."""
import math
import numpy as np
import pytest
import sympy as sp
import torch
from setsens.kernels import (ntk_kernel, kernel_ridge, kernel_ridge_objective, kernel_aif, robust_kernel_ridge, load_mnist, mnist_regression_sample)
from setsens.kernels_study import figure_2b, kernels_study
from setsens.risk import Risk
from setsens.aif import aif

F64 = torch.float64

def unit(g, n, m):
    X = torch.randn(n, m, generator=g, dtype=F64); return X/X.norm(dim=1, keepdim=True)

@pytest.mark.parametrize('seed,n,m', [(0, 40, 3), (1, 60, 10), (2, 25, 50)])
def test_ntk_symmetric_psd_and_printed(seed, n, m):
    X = unit(torch.Generator().manual_seed(seed), n, m)
    K = ntk_kernel(X)
    assert torch.equal(K, K.T)
    ev = torch.linalg.eigvalsh(K)
    assert ev[0] > -1e-12*ev[-1]
    U = (X @ X.T).clamp(-1, 1)
    off = ~torch.eye(n, dtype=torch.bool)
    assert ((K - U*(math.pi - torch.arccos(U))/(2*math.pi))[off]).abs().max() < 1e-13
    assert (torch.diagonal(K) - X.pow(2).sum(1)/2).abs().max() < 1e-15       # ‖x‖²/2, no arccos rounding
    assert torch.allclose(ntk_kernel(X, X[:7]), K[:, :7], atol=1e-14)

def test_ntk_is_the_expected_indicator_kernel():
    g = torch.Generator().manual_seed(3)
    X = unit(g, 5, 4)*torch.tensor([[.5], [1.], [2.], [1.], [3.]], dtype=F64)
    W = torch.randn(500000, 4, generator=g, dtype=F64)
    A = (X @ W.T >= 0).double()
    assert ((X @ X.T)*(A @ A.T)/len(W) - ntk_kernel(X)).abs().max() < 1e-2

def test_ntk_derivatives():
    g = torch.Generator().manual_seed(4)
    Z = unit(g, 6, 5)*torch.linspace(.5, 2, 6, dtype=F64)[:, None]
    V = torch.randn(6, 5, generator=g, dtype=F64)
    _, Kd = torch.func.jvp(ntk_kernel, (Z,), (V,))
    h = 1e-6
    assert torch.allclose(Kd, (ntk_kernel(Z + h*V) - ntk_kernel(Z - h*V))/(2*h), atol=1e-7)
    Zr = Z.clone().requires_grad_(True)
    assert torch.autograd.grad((ntk_kernel(Zr)*Kd.detach()).sum(), Zr)[0].mul(V).sum().item() == pytest.approx((Kd*Kd).sum().item(), rel=1e-10)
    assert torch.allclose(torch.func.jacrev(lambda z: ntk_kernel(z[None])[0, 0])(Z[0]), Z[0], atol=1e-14)   # d/dx K(x,x) = x
    P = torch.stack([Z[0], 2*Z[0], -Z[0]])                                                                     # parallel inputs
    assert torch.isfinite(torch.func.jacrev(ntk_kernel)(P)).all() and torch.isfinite(torch.func.jacfwd(ntk_kernel)(P)).all()
    KN = ntk_kernel(Z, normalize=True)
    assert torch.allclose(torch.diagonal(KN), torch.full((6,), .5, dtype=F64), atol=1e-15)
    assert torch.allclose(KN, ntk_kernel(Z/Z.norm(dim=1, keepdim=True)), atol=1e-14)

def test_kernel_ridge_is_the_minimiser():
    g = torch.Generator().manual_seed(5)
    X, y = unit(g, 30, 4), torch.randn(30, generator=g, dtype=F64)
    th = kernel_ridge(X, y, 1e-2)
    assert torch.func.grad(kernel_ridge_objective)(th, X, y, 1e-2).norm() < 1e-12

def _poly(X, X2=None):
    X2 = X if X2 is None else X2
    return (1 + X @ X2.T)**2

def test_kernel_aif_against_sympy_exact():
    "Corollary 6.1 (reconstructed) equals the exact derivative of the eq. 7 minimiser along X + tB (polynomial kernel, rational data)."
    xs = [[sp.Rational(1, 2), sp.Rational(-1, 4)], [sp.Rational(-1, 3), sp.Rational(1, 5)], [sp.Rational(2, 5), sp.Rational(3, 7)], [0, 1]]
    ys, lam = [1, -2, 3, sp.Rational(1, 2)], sp.Rational(1, 10)
    X = torch.tensor([[float(v) for v in r] for r in xs], dtype=F64); y = torch.tensor([float(v) for v in ys], dtype=F64)
    I, info = kernel_aif(X, y, float(lam), 2, _poly)
    B = info.scale*info.directions                                     # the adversarial perturbation the closed form used
    t = sp.Symbol('t')
    Bs = [[sp.nsimplify(float(v), rational=True) for v in r] for r in B.tolist()]
    Xt = sp.Matrix(4, 2, lambda i, j: xs[i][j] + t*Bs[i][j])
    Kt = (sp.ones(4, 4) + Xt*Xt.T).applyfunc(lambda e: e**2)
    th_t = (Kt.T*Kt + 4*lam*sp.eye(4)).LUsolve(Kt.T*sp.Matrix(ys))
    dth = [float(v) for v in th_t.diff(t).subs(t, 0)]
    assert np.allclose(I.numpy(), dth, rtol=1e-10, atol=1e-12)

@pytest.mark.parametrize('p', [2., math.inf])
@pytest.mark.parametrize('normalize', [False, True])
def test_kernel_aif_equals_engine(p, normalize):
    g = torch.Generator().manual_seed(6)
    X, y, lam = unit(g, 25, 4), torch.randn(25, generator=g, dtype=F64), 1e-2
    kern = lambda Z: ntk_kernel(Z, normalize=normalize)
    I, info = kernel_aif(X, y, lam, p, kern)
    risk = Risk.from_function(lambda prm, X_, Y_: kernel_ridge_objective(prm['theta'], X_, Y_, lam, kern), {'theta': info.theta}, X, y)
    assert torch.allclose(I, aif(risk, p, method='dense')[0], rtol=1e-10, atol=1e-10*I.norm().item())
    Ik, ik = aif(risk, p, rtol=1e-14)
    assert ik.converged and ((Ik - I).norm()/I.norm()).item() < 1e-9

def test_kernel_aif_against_robust_fit():
    g = torch.Generator().manual_seed(7)
    X, y, lam = unit(g, 20, 5), torch.randn(20, generator=g, dtype=F64), 1e-2
    for p in [2., math.inf]:
        I, info = kernel_aif(X, y, lam, p)
        errs = []
        for e in [1e-3, 1e-4]:
            th, ri = robust_kernel_ridge(X, y, lam, e, p)
            assert ri.converged
            errs.append(((th - info.theta)/e - I).norm().item()/I.norm().item())
        assert errs[1] < 2e-3 and 5 < errs[0]/errs[1] < 20                  # O(ε)

def test_mnist_and_figure_2b_small():
    imgs, labels = load_mnist('test')
    assert imgs.shape == (10000, 28, 28) and np.bincount(labels).tolist()[:3] == [980, 1135, 1032]
    tr, trl = load_mnist('train')
    assert tr.shape == (17435, 28, 28) and trl[:5].tolist() == [5, 0, 4, 1, 9]
    X, y = mnist_regression_sample(20, 0)
    assert torch.allclose(X.norm(dim=1), torch.ones(20, dtype=F64)) and ((y >= 0) & (y <= 9)).all()
    f = figure_2b(n=30, reps=1, eps_grid=(1e-4, 1e-3))
    assert f['dI'][0, 0] < f['dI'][0, 1] and .8 < math.log(f['dI'][0, 1]/f['dI'][0, 0])/math.log(10) < 1.2

def test_kernels_study_quick():
    res = kernels_study(quick=True)
    assert res[0].within and res[1].within

def test_bad_inputs():
    with pytest.raises(ValueError, match='zero'): ntk_kernel(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match='X1, X2'): ntk_kernel(torch.ones(2, 3, dtype=F64), torch.ones(2, 4, dtype=F64))
    with pytest.raises(ValueError, match='X1'): ntk_kernel(torch.ones(3, dtype=F64))
    X, y = torch.eye(3, dtype=F64), torch.ones(3, dtype=F64)
    with pytest.raises(ValueError, match='lam'): kernel_ridge(X, y, 0.)
    with pytest.raises(ValueError, match='X, y'): kernel_ridge(X, torch.ones(4, dtype=F64), 1.)
    with pytest.raises(ValueError, match='p'): kernel_aif(X, y, 1., p=.5)
    with pytest.raises(ValueError, match='eps'): robust_kernel_ridge(X, y, 1., -1.)
    with pytest.raises(ValueError, match='split'): load_mnist('validation')
