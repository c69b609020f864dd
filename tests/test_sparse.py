"""Sparse perturbations (issue 13.3): J·ΔX and the rows K of Jᵀ·U from (idx, ΔX_K), touching only the rows K.

Every equality is in float64 against the dense path (an X-shaped ΔX with zeros off K) and against explicit
derivatives (`torch.func.jacrev` of the gradient map, `torch.func.hessian`), for tensors, map-style Datasets,
DataLoaders (uneven last batch) and plain lists of batches, batched and unbatched.
"""
import math
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from setsens.risk import Risk
from setsens.graphical import solution_shift, estimate_solution_set, _weighted_dX

f64 = torch.float64
N, K = 11, [9, 2, 5]                      # 11 rows in batches of 4: 4 + 4 + 3 (an uneven last batch)


def _problem(conv=False):
    g = torch.Generator().manual_seed(3)
    if conv:   # image-shaped rows (1, 4, 4): ΔX rows carry trailing dimensions
        net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()
        X = torch.randn(N, 1, 4, 4, generator=g, dtype=f64)
        Y = torch.randint(0, 3, (N,), generator=g)
        loss = 'cross_entropy'
    else:
        net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        X = torch.randn(N, 3, generator=g, dtype=f64)
        Y = torch.randn(N, 2, generator=g, dtype=f64)
        loss = 'mse'
    with torch.no_grad():
        for p in net.parameters(): p.copy_(torch.randn(p.shape, generator=g, dtype=f64)*0.7)
    return net.eval(), loss, X, Y


class Rows(Dataset):
    "A map-style dataset (not a TensorDataset) that counts the rows it is asked for."
    def __init__(self, X, Y): self.X, self.Y, self.reads = X, Y, 0
    def __len__(self): return len(self.X)
    def __getitem__(self, i):
        self.reads += 1
        return self.X[i], self.Y[i]


class InOrder(Sampler):
    "A custom sampler that happens to read in order: no random access is assumed (the streamed fallback)."
    def __init__(self, n): self.n = n
    def __iter__(self): return iter(range(self.n))
    def __len__(self): return self.n


def _sources(X, Y):
    return {
        'tensors': lambda: Risk(*_m(), X, Y, batch_size=4),
        'tensordataset': lambda: Risk(*_m(), TensorDataset(X, Y)),
        'dataset': lambda: Risk(*_m(), Rows(X, Y)),
        'loader': lambda: Risk(*_m(), DataLoader(TensorDataset(X, Y), batch_size=4)),
        'loader-dataset': lambda: Risk(*_m(), DataLoader(Rows(X, Y), batch_size=4)),
        'loader-sampler': lambda: Risk(*_m(), DataLoader(TensorDataset(X, Y), batch_size=4, sampler=InOrder(N))),
        'batches': lambda: Risk(*_m(), [(X[a:a + 4], Y[a:a + 4]) for a in range(0, N, 4)]),
    }


_CURRENT = {}
def _m(): return _CURRENT['net'], _CURRENT['loss']


def _explicit_J(net, loss, X, Y):
    "J (p, n·d) from plain torch.func: the Jacobian in X of the gradient of the user's mean loss."
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    def R(w, X_):
        prm, o = {}, 0
        for k, s in zip(names, shapes):
            prm[k] = w[o:o + math.prod(s)].reshape(s); o += math.prod(s)
        out = functional_call(net, prm, (X_,))
        if loss == 'mse': return (0.5*(out - Y)**2).sum(1).mean()
        return nn.functional.cross_entropy(out, Y)
    J = jacrev(grad(R), argnums=1)(w0, X).reshape(w0.numel(), -1)
    return J, hessian(R)(w0, X), w0


@pytest.fixture(params=[False, True], ids=['mlp', 'conv'])
def problem(request):
    net, loss, X, Y = _problem(request.param)
    _CURRENT.update(net=net, loss=loss)
    return net, loss, X, Y


def _dense(X, rows, idx, k=None):
    D = torch.zeros(X.shape + ((k,) if k else ()), dtype=f64)
    D[idx] = rows
    return D


@pytest.mark.parametrize('src', ['tensors', 'tensordataset', 'dataset', 'loader', 'loader-dataset', 'loader-sampler', 'batches'])
def test_sparse_equals_dense_and_explicit(problem, src):
    net, loss, X, Y = problem
    risk = _sources(X, Y)[src]()
    J, _, _ = _explicit_J(net, loss, X, Y)
    g = torch.Generator().manual_seed(1)
    dXK = torch.randn((len(K),) + X.shape[1:], generator=g, dtype=f64)
    dXKb = torch.randn((len(K),) + X.shape[1:] + (3,), generator=g, dtype=f64)
    U = torch.randn(risk.p, 2, generator=g, dtype=f64)
    D, Db = _dense(X, dXK, K), _dense(X, dXKb, K, 3)
    tol = lambda t: 1e-12*max(float(t.abs().max()), 1e-300)
    sp, de = risk.jx(dXK, idx=K), risk.jx(D)
    assert (sp - de).abs().max() <= tol(de)                                      # sparse == dense
    assert (sp - J @ D.reshape(-1)).abs().max() <= tol(de)                       # == the explicit Jacobian
    spb = risk.jx(dXKb, idx=K)
    assert spb.shape == (risk.p, 3) and (spb - risk.jx(Db)).abs().max() <= tol(spb)
    assert (spb - J @ Db.reshape(-1, 3)).abs().max() <= tol(spb)
    for u in (U, U[:, 0]):
        rows = risk.jxT(u, idx=K)
        full = (J.T @ u).reshape(X.shape + u.shape[1:])
        assert rows.shape == (len(K),) + X.shape[1:] + u.shape[1:]
        assert (rows - full[K]).abs().max() <= tol(full)
        assert (rows - risk.jxT(u)[K]).abs().max() <= tol(full)
    # adjointness on the rows K: <J_K dX_K, U> = <dX_K, (Jᵀ U)_K>
    lhs, rhs = float((risk.jx(dXKb, idx=K)*U[:, :1]).sum()), float((dXKb*risk.jxT(U[:, :1], idx=K)).sum())
    assert abs(lhs - rhs) <= 1e-12*max(abs(lhs), 1.)


def test_only_the_rows_K_are_read(problem):
    "A Dataset or a DataLoader over one: exactly len(K) items fetched; a list of batches: only len(K) rows evaluated."
    net, loss, X, Y = problem
    dXK = torch.randn((len(K),) + X.shape[1:], dtype=f64)
    for make in (lambda ds: ds, lambda ds: DataLoader(ds, batch_size=4)):
        ds = Rows(X, Y)
        risk = Risk(net, loss, make(ds))
        ds.reads = 0
        risk.jx(dXK, idx=K)
        assert ds.reads == len(K)
        ds.reads = 0
        risk.jxT(torch.ones(risk.p, dtype=f64), idx=K)
        assert ds.reads == len(K)
    seen = []
    h = net.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        risk = Risk(net, loss, [(X[a:a + 4], Y[a:a + 4]) for a in range(0, N, 4)])
        seen.clear()
        risk.jx(dXK[:1], idx=[9])             # row 9 lies in the last batch: the first two are skipped
        assert sum(seen) <= 2                 # the rows evaluated: 1 (plus nothing else; a forward may run twice)
        assert all(s == 1 for s in seen)
    finally:
        h.remove()


@pytest.mark.parametrize('mode', ['rev_rev', 'fwd_rev'])
def test_modes_and_chunks(problem, mode):
    net, loss, X, Y = problem
    dXK = torch.randn((len(K),) + X.shape[1:] + (2,), dtype=f64)
    ref = Risk(net, loss, X, Y).jx(_dense(X, dXK, K, 2))
    for bs in (None, 1, 2):
        r = Risk(net, loss, X, Y, batch_size=bs, hvp_mode=mode)
        assert (r.jx(dXK, idx=K) - ref).abs().max() <= 1e-12*float(ref.abs().max())


def test_from_function_rows():
    "A coupled risk (from_function) takes idx too: ΔX_K is placed into n rows there (documented)."
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 2, generator=g, dtype=f64)
    prm = {'a': torch.randn(7, generator=g, dtype=f64)}
    fn = lambda p, X_, Y_: (p['a'] @ torch.exp(-torch.cdist(X_, X_)**2) @ p['a'])
    r = Risk.from_function(fn, prm, X)
    dXK = torch.randn(2, 2, generator=g, dtype=f64)
    D = _dense(X, dXK, [4, 1])
    assert (r.jx(dXK, idx=[4, 1]) - r.jx(D)).abs().max() <= 1e-12*float(r.jx(D).abs().max())
    U = torch.randn(7, generator=g, dtype=f64)
    assert torch.equal(r.jxT(U, idx=[4, 1]), r.jxT(U)[[4, 1]])


@pytest.mark.parametrize('src', ['tensors', 'dataset', 'loader', 'batches'])
def test_solution_shift_sparse_eq14_exact(problem, src):
    "solution_shift / estimate_solution_set with idx: equal to the X-shaped call, and eq. 14's n/|K| against pinv."
    net, loss, X, Y = problem
    risk = _sources(X, Y)[src]()
    J, H, _ = _explicit_J(net, loss, X, Y)
    dXK = torch.randn((len(K),) + X.shape[1:], generator=torch.Generator().manual_seed(2), dtype=f64)
    D = _dense(X, dXK, K)
    for weighting, fct in (('eq14', N/len(K)), ('mean', 1.)):
        dw, info = solution_shift(risk, dXK, idx=K, weighting=weighting, rtol=1e-13, maxiter=500, check=False)
        dw_dense, _ = solution_shift(risk, D, weighting=weighting, rtol=1e-13, maxiter=500, check=False)
        oracle = -torch.linalg.pinv(H, hermitian=True) @ (J @ (fct*D).reshape(-1))
        assert bool(info.converged)
        assert (dw - dw_dense).abs().max() <= 1e-9*float(oracle.abs().max())
        assert (dw - oracle).abs().max() <= 1e-7*float(oracle.abs().max())
    # the weighting factor is applied to the |K| rows only: no n-row tensor
    dXw, KK = _weighted_dX(risk, dXK, K, 'eq14')
    assert dXw.shape == dXK.shape and KK.tolist() == K
    assert torch.equal(dXw, dXK*(N/len(K)))
    pts, infos = estimate_solution_set(risk, dXK, n=2, seed=0, idx=K, rtol=1e-12, maxiter=500, check=False)
    pts_d, _ = estimate_solution_set(risk, D, n=2, seed=0, rtol=1e-12, maxiter=500, check=False)
    assert (pts - pts_d).abs().max() <= 1e-8*float((pts_d - risk.w).abs().max())


def test_aif_interval_uses_rows():
    "aif_confidence_interval's per-example solves pass (idx, ΔX_K): ζ_i against the explicit −n H⁻¹ J_i ΔX_i."
    from setsens.aif import aif_confidence_interval
    net, loss, X, Y = _problem(False)
    risk = Risk(net, loss, X, Y)
    _, H, _ = _explicit_J(net, loss, X, Y)
    J, _, _ = _explicit_J(net, loss, X, Y)
    H = H + 5.*torch.eye(H.shape[0], dtype=f64)          # a damped, positive definite H (the point is not a minimum)
    ci = aif_confidence_interval(risk, 2, damping=5., return_zeta=True, chunk=4, rtol=1e-12, maxiter=500)
    phi_scale = ci.info['scale']
    from setsens.aif import adversarial_direction
    phi = adversarial_direction(risk.grad_x(), 2)*phi_scale
    d = X[0].numel()
    for i in (0, 5, 10):
        zi = -N*torch.linalg.solve(H, J[:, i*d:(i + 1)*d] @ phi[i].reshape(-1))
        assert (ci.zeta[i] - zi).abs().max() <= 1e-8*float(zi.abs().max())


@pytest.mark.parametrize('src', ['tensors', 'dataset', 'loader', 'batches'])
def test_bad_idx(src):
    net, loss, X, Y = _problem(False)
    _CURRENT.update(net=net, loss=loss)
    risk = _sources(X, Y)[src]()
    dXK = torch.randn(2, 3, dtype=f64)
    U = torch.randn(risk.p, dtype=f64)
    for f in (lambda idx, d=dXK: risk.jx(d, idx=idx), lambda idx, d=dXK: risk.jxT(U, idx=idx),
              lambda idx, d=dXK: solution_shift(risk, d, idx=idx, check=False),
              lambda idx, d=dXK: estimate_solution_set(risk, d, n=2, seed=0, idx=idx, check=False)):
        with pytest.raises(ValueError, match=r'^idx: indices must lie in \[0, 11\), got 11'): f([1, 11])
        with pytest.raises(ValueError, match=r'^idx: indices must lie in \[0, 11\), got -1'): f([-1, 3])
        with pytest.raises(ValueError, match=r'^idx: repeated row indices \[4\]'): f([4, 4])
        with pytest.raises(TypeError, match=r'^idx: expected integer row indices, got torch.float'): f([1., 2.])
        with pytest.raises(TypeError, match=r'^idx: expected integer row indices, got torch.bool'): f(torch.tensor([True, False]))
        with pytest.raises(TypeError, match=r'^idx: expected integer row indices'): f(['a', 'b'])
    for f in (lambda d: risk.jx(d, idx=[1, 2, 3]), lambda d: solution_shift(risk, d, idx=[1, 2, 3], check=False)):
        with pytest.raises(ValueError, match=r'^dX: '): f(dXK)                       # 2 rows for 3 indices
        with pytest.raises(ValueError, match=r'^dX: '): f(torch.randn(3, 4, dtype=f64))   # wrong row shape
    with pytest.raises(ValueError, match=r'^dX, (X|parameters): different dtypes'): risk.jx(dXK.float(), idx=[1, 2])
    # empty idx: J applied to no rows is 0 (the sharded case); solution_shift refuses an empty K
    assert torch.equal(risk.jx(dXK[:0], idx=[]), torch.zeros(risk.p, dtype=f64))
    assert risk.jxT(U, idx=[]).shape == (0, 3)
    with pytest.raises(ValueError, match='is empty'): solution_shift(risk, X[:1], idx=[])


def test_collate_that_couples_rows_is_refused():
    "A loader's own collate_fn collates the fetched rows; one that makes rows depend on the batch is refused naming data."
    net, loss, X, Y = _problem(False)
    stack = lambda items: (torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))
    risk = Risk(net, loss, DataLoader(TensorDataset(X, Y), batch_size=4, collate_fn=stack))
    dXK = torch.randn(2, 3, dtype=f64)
    ref = Risk(net, loss, X, Y).jx(dXK, idx=[0, 7])
    assert (risk.jx(dXK, idx=[0, 7]) - ref).abs().max() <= 1e-12*float(ref.abs().max())
    def by_size(items):   # targets cut to one column unless the batch has 3 or 4 rows (as the streamed batches do)
        Xb, Yb = stack(items)
        return Xb, (Yb if len(items) in (3, 4) else Yb[:, :1])
    r2 = Risk(net, loss, DataLoader(TensorDataset(X, Y), batch_size=4, collate_fn=by_size))
    with pytest.raises(ValueError, match=r'^data: batch of the rows idx has'): r2.jx(dXK, idx=[0, 7])
