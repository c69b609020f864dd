"""Linear operators with shapes (issue 13.4): risk.H, risk.J, Jᵀ, H + λI, the SciPy view, the solvers on them,
`damping=` in solution_shift / estimate_solution_set, and the one protocol (`BaseRisk`) instead of duck typing.

Oracles are explicit float64 matrices from `torch.func.hessian` and `torch.func.jacrev` of the user's mean loss.
"""
import inspect, math, re
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev
from torch.utils.data import DataLoader, TensorDataset
from scipy.sparse.linalg import LinearOperator as SciPyOperator, minres as sp_minres

from setsens.risk import Risk, BaseRisk, LinearOperator, HessianOperator, MixedOperator, IdentityOperator
from setsens.krylov import minres, lsqr, cgls
from setsens.graphical import solution_shift, estimate_solution_set

f64 = torch.float64


def _problem(dtype=f64, device='cpu', loader=False):
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in net.parameters(): p.copy_(torch.randn(p.shape, generator=g, dtype=f64))
    X = torch.randn(9, 3, generator=g, dtype=f64)
    Y = torch.randn(9, 2, generator=g, dtype=f64)
    net = net.to(dtype=dtype, device=device)
    Xd, Yd = X.to(dtype=dtype, device=device), Y.to(dtype=dtype, device=device)
    risk = Risk(net, 'mse', DataLoader(TensorDataset(Xd, Yd), batch_size=4)) if loader else Risk(net, 'mse', Xd, Yd)
    return net, X, Y, risk


def _explicit(net, X, Y):
    "H (p, p) and J (p, n·d) of the mean ½‖f − y‖² in float64, from torch.func alone."
    net = net.double().cpu()
    names, shapes = zip(*[(k, p.shape) for k, p in net.named_parameters()])
    w0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    def R(w, X_):
        prm, o = {}, 0
        for k, s in zip(names, shapes):
            prm[k] = w[o:o + math.prod(s)].reshape(s); o += math.prod(s)
        return (0.5*(functional_call(net, prm, (X_,)) - Y)**2).sum(1).mean()
    return hessian(R)(w0, X), jacrev(grad(R), argnums=1)(w0, X).reshape(w0.numel(), -1)


def close(a, b, rel=1e-12):
    a, b = torch.as_tensor(a, dtype=f64), torch.as_tensor(b, dtype=f64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float((a - b).abs().max()) <= rel*max(float(b.abs().max()), 1e-300), float((a - b).abs().max())


@pytest.fixture(params=[False, True], ids=['tensors', 'loader'])
def prob(request):
    net, X, Y, risk = _problem(loader=request.param)
    H, J = _explicit(net, X, Y)
    return risk, H, J, X


def test_shapes_dtypes_devices(prob):
    risk, H, J, X = prob
    p, nd = risk.p, X.numel()
    assert isinstance(risk.H, HessianOperator) and isinstance(risk.J, MixedOperator) and isinstance(risk.I, IdentityOperator)
    assert (risk.H.shape, risk.J.shape, risk.J.T.shape, risk.I.shape) == ((p, p), (p, nd), (nd, p), (p, p))
    assert risk.J.restrict([1, 4]).shape == (p, 2*3) and risk.J.restrict([1, 4]).T.shape == (6, p)
    assert (risk.H + 0.5*risk.I).shape == (p, p)
    for op in (risk.H, risk.J, risk.J.T, risk.H + 0.5*risk.I, -risk.H, risk.H - risk.I):
        assert isinstance(op, LinearOperator) and op.dtype == f64 and op.device == torch.device('cpu')
    r32 = _problem(torch.float32)[3]
    assert r32.H.dtype == r32.J.dtype == torch.float32


def test_products_against_explicit(prob):
    risk, H, J, X = prob
    g = torch.Generator().manual_seed(1)
    V = torch.randn(risk.p, 3, generator=g, dtype=f64)
    D = torch.randn(X.numel(), 2, generator=g, dtype=f64)
    U = torch.randn(risk.p, 2, generator=g, dtype=f64)
    close(risk.H @ V, H @ V); close(risk.H @ V[:, 0], H @ V[:, 0]); close(risk.H(V), H @ V)
    for lam in (0.3, 2.):
        close((risk.H + lam*risk.I) @ V, (H + lam*torch.eye(risk.p, dtype=f64)) @ V)
        close((lam*risk.I + risk.H) @ V[:, 1], H @ V[:, 1] + lam*V[:, 1])
    close((risk.H - risk.I) @ V, H @ V - V); close((-risk.H) @ V, -(H @ V))
    close(risk.J @ D, J @ D); close(risk.J @ D[:, 0], J @ D[:, 0])
    close(risk.J.T @ U, J.T @ U); close(risk.J.T @ U[:, 0], J.T @ U[:, 0])
    close(risk.J.T.T @ D, J @ D)
    K = [7, 0, 3]
    cols = torch.cat([torch.arange(3*k, 3*k + 3) for k in K])
    JK = risk.J.restrict(K)
    close(JK @ D[:9], J[:, cols] @ D[:9]); close(JK.T @ U, J[:, cols].T @ U)
    close(risk.H.to_dense(), H); close(risk.J.to_dense(), J); close(JK.to_dense(), J[:, cols])
    # adjointness <J dX, U> = <dX, Jᵀ U>, independent of the explicit matrices
    lhs = (risk.J @ D*U).sum(0); rhs = (D*(risk.J.T @ U)).sum(0)
    close(lhs, rhs)
    # H is symmetric as an operator: <H u, v> = <u, H v>
    close((risk.H @ V[:, 0]) @ V[:, 1], V[:, 0] @ (risk.H @ V[:, 1]))


def test_scipy_view(prob):
    risk, H, J, X = prob
    g = np.random.default_rng(0)
    for op, M in ((risk.H, H), (risk.H + 0.7*risk.I, H + 0.7*torch.eye(risk.p, dtype=f64)), (risk.J, J),
                  (risk.J.T, J.T), (risk.J.restrict([2, 5]), J[:, [6, 7, 8, 15, 16, 17]])):
        S = op.to_scipy()
        assert isinstance(S, SciPyOperator) and S.shape == op.shape and S.dtype == np.float64
        x, Xm, y = g.standard_normal(op.shape[1]), g.standard_normal((op.shape[1], 3)), g.standard_normal(op.shape[0])
        assert isinstance(S.matvec(x), np.ndarray) and S.matvec(x).dtype == np.float64
        close(torch.from_numpy(S.matvec(x)), M @ torch.from_numpy(x))
        close(torch.from_numpy(S @ Xm), M @ torch.from_numpy(Xm))
        close(torch.from_numpy(S.rmatvec(y)), M.T @ torch.from_numpy(y))
    # SciPy's own solver on the damped operator agrees with the dense solve
    lam = float(max(0., -torch.linalg.eigvalsh(H)[0])) + 0.5
    b = g.standard_normal(risk.p)
    x, info = sp_minres((risk.H + lam*risk.I).to_scipy(), b, rtol=1e-12)
    assert info == 0
    close(torch.from_numpy(x), torch.linalg.solve(H + lam*torch.eye(risk.p, dtype=f64), torch.from_numpy(b)), 1e-8)
    r32 = _problem(torch.float32)[3]                  # float32 operators: float64 numpy still goes in and comes out
    assert r32.H.to_scipy().matvec(np.ones(r32.p)).dtype == np.float64


def test_solvers_take_operators(prob):
    risk, H, J, X = prob
    lam = float(max(0., -torch.linalg.eigvalsh(H)[0])) + 0.5
    Hd = H + lam*torch.eye(risk.p, dtype=f64)
    B = torch.randn(risk.p, 2, generator=torch.Generator().manual_seed(3), dtype=f64)
    x, info = minres(risk.H + lam*risk.I, B, rtol=1e-12)
    assert bool(info.converged.all()); close(x, torch.linalg.solve(Hd, B), 1e-8)
    x, _ = cgls(risk.H + lam*risk.I, B, rtol=1e-12, maxiter=2000)
    close(x, torch.linalg.solve(Hd, B), 1e-7)
    # lsqr on the rectangular J (uses J.T): the minimum-norm least-squares solution of J v = B
    x, info = lsqr(risk.J, B, rtol=1e-12, maxiter=2000)
    close(x, torch.linalg.pinv(J) @ B, 1e-7)
    x, _ = lsqr(risk.J.T, torch.randn(X.numel(), dtype=f64), rtol=1e-12, maxiter=2000)
    assert x.shape == (risk.p,)
    # an operator of the wrong shape is refused before any product, naming it
    with pytest.raises(ValueError, match=r'^A: minres needs a square'): minres(risk.J, B)
    with pytest.raises(ValueError, match=r'^A: minres needs a square'): minres(risk.H + risk.I, B[:-1])
    with pytest.raises(ValueError, match=r'^A: the operator has shape'): lsqr(risk.J, B[:-1])
    with pytest.raises(ValueError, match=r'^AT: the operator has shape'): lsqr(risk.J, B, AT=risk.H)
    with pytest.raises(ValueError, match=r'^A: the operator works in torch.float64'): minres(risk.H, B.float())
    # a callable keeps working as before
    x, _ = minres(lambda v: risk.hvp(v) + lam*v, B, rtol=1e-12)
    close(x, torch.linalg.solve(Hd, B), 1e-8)


@pytest.mark.parametrize('weighting', ['eq14', 'mean'])
def test_damped_solution_shift(prob, weighting):
    risk, H, J, X = prob
    lam = float(max(0., -torch.linalg.eigvalsh(H)[0])) + 0.25
    K = [1, 6]
    dXK = torch.randn(2, 3, generator=torch.Generator().manual_seed(4), dtype=f64)
    D = torch.zeros_like(X); D[K] = dXK*(9/2 if weighting == 'eq14' else 1.)
    oracle = torch.linalg.solve(H + lam*torch.eye(risk.p, dtype=f64), -(J @ D.reshape(-1)))
    dw, info = solution_shift(risk, dXK, idx=K, weighting=weighting, damping=lam, rtol=1e-13, check=False)
    assert bool(info.converged); close(dw, oracle, 1e-9)
    pts, infos = estimate_solution_set(risk, dXK, n=3, seed=0, idx=K, weighting=weighting, damping=lam, rtol=1e-13,
                                       check=False)
    for j in range(3): close(pts[j] - risk.w, oracle, 1e-8)   # H + λI ≻ 0: the set is the single point
    # damping=0 (and None) is the undamped solve
    dw0, _ = solution_shift(risk, dXK, idx=K, weighting=weighting, damping=0., rtol=1e-13, check=False, maxiter=500)
    dwn, _ = solution_shift(risk, dXK, idx=K, weighting=weighting, damping=None, rtol=1e-13, check=False, maxiter=500)
    close(dw0, dwn, 0.)
    close(dw0, -torch.linalg.pinv(H, hermitian=True) @ (J @ D.reshape(-1)), 1e-7)


@pytest.mark.parametrize('bad', [-1e-3, math.nan, math.inf, -math.inf, 'big'])
def test_bad_damping(bad):
    risk = _problem()[3]
    err = TypeError if isinstance(bad, str) else ValueError
    dX = torch.ones(1, 3, dtype=f64)
    with pytest.raises(err, match=r'^damping: '): solution_shift(risk, dX, idx=[0], damping=bad, check=False)
    with pytest.raises(err, match=r'^damping: '): estimate_solution_set(risk, dX, n=2, seed=0, idx=[0], damping=bad, check=False)


def test_operator_bad_input():
    risk = _problem()[3]
    p = risk.p
    with pytest.raises(ValueError, match=r'^V: the HessianOperator of shape'): risk.H @ torch.ones(p + 1, dtype=f64)
    with pytest.raises(ValueError, match=r'^V: the HessianOperator of shape'): risk.H @ torch.ones(p, 2, 2, dtype=f64)
    with pytest.raises(ValueError, match=r'^V: is torch.float32'): risk.H @ torch.ones(p)
    with pytest.raises(ValueError, match=r'^V: the MixedOperator of shape'): risk.J @ torch.ones(9, 3, dtype=f64)   # flat only
    with pytest.raises(ValueError, match=r'^B: cannot add operators of shapes'): risk.H + risk.J
    with pytest.raises(ValueError, match=r'^B: cannot add a torch.float32'): risk.H + _problem(torch.float32)[3].I
    with pytest.raises(ValueError, match=r'^c: a factor of an operator must be finite'): math.nan*risk.I
    with pytest.raises(TypeError): risk.H @ [1., 2.]
    with pytest.raises(TypeError): risk.H + 1.
    with pytest.raises(ValueError, match=r'^idx: indices must lie in'): risk.J.restrict([9])
    with pytest.raises(ValueError, match=r'^idx: repeated row indices'): risk.J.restrict([1, 1])
    with pytest.raises(ValueError, match=r'^idx: this operator is restricted already'): risk.J.restrict([1]).restrict([0])


def test_one_protocol_no_duck_typing():
    "Risk and DistributedRisk implement BaseRisk; the engine asks `risk.sharded`, never hasattr/getattr on a risk."
    from setsens.distributed import DistributedRisk
    risk = _problem()[3]
    assert issubclass(Risk, BaseRisk) and issubclass(DistributedRisk, BaseRisk)
    assert risk.sharded is False and DistributedRisk.sharded is True
    t = torch.ones(2)
    assert risk.allsum(t) is t
    assert risk.x_shape == (9, 3) and risk.loss is not None and risk.model is not None
    for name in ('value', 'grad', 'grad_x', 'hvp', 'jx', 'jxT', 'data_mean', 'allsum'):
        assert callable(getattr(DistributedRisk, name)) and callable(getattr(Risk, name))
    assert 'idx' in inspect.signature(DistributedRisk.jx).parameters and 'idx' in inspect.signature(DistributedRisk.jxT).parameters
    class Partial(BaseRisk): pass
    with pytest.raises(NotImplementedError, match=r'^Partial: does not implement hvp'): Partial().hvp(t)
    root = Path(__file__).resolve().parents[1]/'setsens'
    for mod in ('graphical', 'aif', 'krylov'):
        src = (root/f'{mod}.py').read_text()
        assert not re.search(r'hasattr\(\s*(risk|r|self\._risk)\b', src), mod
        assert not re.search(r'getattr\(\s*(risk|r|self\._risk)\b', src), mod
        assert 'def __getattr__' not in src, mod    # a forwarding wrapper (a module's `__getattr__ = moved(...)` alias is not one)
        assert '_Damped' not in src, mod


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_operators_on_gpu():
    net, X, Y, risk = _problem(device='cuda')
    H, J = _explicit(net, X, Y)
    V = torch.randn(risk.p, 2, dtype=f64)
    assert risk.H.device.type == 'cuda'
    close((risk.H + 0.5*risk.I) @ V.cuda(), H @ V + 0.5*V)
    D = torch.randn(X.numel(), dtype=f64)
    close(risk.J @ D.cuda(), J @ D)
    close(torch.from_numpy(risk.H.to_scipy().matvec(V[:, 0].numpy())), H @ V[:, 0])
