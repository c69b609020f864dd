"""setsens.risk: products against explicit float64 derivatives, chunking, batching, modes, bad input."""
import math
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from hypothesis import given, settings, strategies as st, HealthCheck
from setsens.risk import Risk, check_eval_mode

D = torch.float64
N, DIN, DOUT = 11, 3, 2
MODES = Risk.MODES


# --------------------------------------------------------------------------- models and oracles
class Dup(nn.Module):
    "tanh hidden layer whose units enter the output twice: f = A [h; h] + b, so R depends on A[:, :m] + A[:, m:] only."
    def __init__(self, m=4):
        super().__init__()
        self.hid, self.out = nn.Linear(DIN, m), nn.Linear(2*m, DOUT)
    def forward(self, x):
        h = torch.tanh(self.hid(x))
        return self.out(torch.cat([h, h], -1))


def make(kind, seed=0):
    torch.manual_seed(seed)
    if kind == 'tanh': m = nn.Sequential(nn.Linear(DIN, 5), nn.Tanh(), nn.Linear(5, DOUT))
    elif kind == 'relu': m = nn.Sequential(nn.Linear(DIN, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, DOUT))
    elif kind == 'bn':
        m = nn.Sequential(nn.Linear(DIN, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.3), nn.Linear(5, DOUT))
        m.train()(torch.randn(64, DIN)*1.5 + 0.7)      # non-trivial running statistics
        with torch.no_grad(): m[1].weight.uniform_(0.5, 2.); m[1].bias.normal_()
    elif kind == 'dup': m = Dup()
    elif kind == 'conv':
        m = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2*3*3, DOUT))
        m.train()(torch.randn(32, 2, 3, 3) + 0.5)
    m = m.double().eval()
    X = torch.randn(N, 2, 3, 3, dtype=D) if kind == 'conv' else torch.randn(N, DIN, dtype=D)
    Y = torch.randn(N, DOUT, dtype=D)
    return m, X, Y


def oracle(m, X, Y, names=None):
    "R(w, X) with an independently written flat-vector split and loss; plain autograd derivatives."
    named = dict(m.named_parameters())
    names = list(named) if names is None else names
    shapes = [named[k].shape for k in names]
    w0 = torch.cat([named[k].detach().reshape(-1) for k in names])
    def R(w, X_=X):
        d, i = {}, 0
        for k, s in zip(names, shapes):
            d[k] = w[i:i + math.prod(s)].reshape(s); i += math.prod(s)
        out = torch.func.functional_call(m, d, (X_,))
        return ((out - Y)**2).sum()/(2*X_.shape[0])
    def gradw(X_):
        w = w0.clone().requires_grad_()
        return torch.autograd.grad(R(w, X_), w, create_graph=True)[0]
    H = torch.autograd.functional.hessian(R, w0)
    J = torch.autograd.functional.jacobian(gradw, X).reshape(len(w0), -1)
    return w0, R, H, J


KINDS = ['tanh', 'relu', 'bn', 'dup', 'conv']
_cache = {}
def setup(kind):
    if kind not in _cache:
        m, X, Y = make(kind)
        _cache[kind] = (m, X, Y, *oracle(m, X, Y))
    return _cache[kind]


# --------------------------------------------------------------------------- explicit matrices
@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('bs', [None, 4])
def test_products_match_explicit(kind, mode, bs):
    m, X, Y, w0, R, H, J = setup(kind)
    r = Risk(m, 'mse', X, Y, batch_size=bs, hvp_mode=mode, vectorize=True)
    torch.testing.assert_close(r.w, w0, rtol=0, atol=0)
    torch.testing.assert_close(r.value(), R(w0), rtol=1e-13, atol=1e-14)
    I = torch.eye(r.p, dtype=D)
    torch.testing.assert_close(r.hvp(I), H, rtol=1e-10, atol=1e-12)   # all p columns at once: the whole Hessian
    rl = Risk(m, 'mse', X, Y, batch_size=bs, hvp_mode=mode)           # the CPU default: a loop over columns
    assert not rl.vectorize
    torch.testing.assert_close(rl.hvp(I[:, ::17]), H[:, ::17], rtol=1e-10, atol=1e-12)
    g = torch.Generator().manual_seed(1)
    dX = torch.randn(X.shape + (3,), dtype=D, generator=g)
    U = torch.randn(r.p, 3, dtype=D, generator=g)
    torch.testing.assert_close(r.jx(dX), J @ dX.reshape(-1, 3), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r.jxT(U), (J.T @ U).reshape(X.shape + (3,)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r.jx(dX[..., 0]), J @ dX[..., 0].reshape(-1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r.jxT(U[:, 0]), (J.T @ U[:, 0]).reshape(X.shape), rtol=1e-10, atol=1e-12)


def test_singular_duplicated_units():
    m, X, Y, w0, R, H, J = setup('dup')
    r = Risk(m, 'mse', X, Y, vectorize=True)
    # kernel: any (dA, -dA) on the two copies of the output weights
    names = r.names
    kern = []
    for i in range(DOUT):
        for j in range(4):
            dA = torch.zeros(DOUT, 8, dtype=D); dA[i, j], dA[i, j + 4] = 1., -1.
            d = {k: torch.zeros_like(v) for k, v in zip(names, r.unflatten(r.w).values())}
            d['out.weight'] = dA
            kern.append(r.flatten(d))
    K = torch.stack(kern, 1)
    hn = torch.linalg.matrix_norm(H, 2)
    assert torch.linalg.matrix_norm(H @ K, 2) <= 1e-13*hn           # the oracle: exactly singular
    for mode in MODES:
        assert torch.linalg.matrix_norm(Risk(m, 'mse', X, Y, hvp_mode=mode).hvp(K), 2) <= 1e-13*hn   # looped columns
    ev = torch.linalg.eigvalsh(H)
    assert int((ev.abs() <= 1e-12*hn).sum()) >= DOUT*4               # nullity at least 8
    assert torch.linalg.matrix_rank(r.hvp(torch.eye(r.p, dtype=D)), rtol=1e-10) == torch.linalg.matrix_rank(H, rtol=1e-10)


# --------------------------------------------------------------------------- chunking, batching, modes
@pytest.mark.parametrize('kind', ['relu', 'bn'])
def test_chunking_invariance(kind):
    m, X, Y = make(kind)
    ref = Risk(m, 'mse', X, Y)
    g = torch.Generator().manual_seed(2)
    V = torch.randn(ref.p, 2, dtype=D, generator=g); dX = torch.randn(X.shape + (2,), dtype=D, generator=g)
    want = [ref.value(), ref.grad(), ref.grad_x(), ref.hvp(V), ref.jx(dX), ref.jxT(V)]
    for bs in [1, 2, 5, N - 1, N, 100]:
        r = Risk(m, 'mse', X, Y, batch_size=bs)
        got = [r.value(), r.grad(), r.grad_x(), r.hvp(V), r.jx(dX), r.jxT(V)]
        for a, b in zip(got, want): torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('vec', [True, False])
def test_batched_equals_looped(mode, vec):
    m, X, Y = make('bn')
    r = Risk(m, 'mse', X, Y, batch_size=3, hvp_mode=mode, vectorize=vec)
    g = torch.Generator().manual_seed(3)
    V = torch.randn(r.p, 4, dtype=D, generator=g); dX = torch.randn(X.shape + (4,), dtype=D, generator=g)
    torch.testing.assert_close(r.hvp(V), torch.stack([r.hvp(V[:, j]) for j in range(4)], 1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(r.jx(dX), torch.stack([r.jx(dX[..., j]) for j in range(4)], 1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(r.jxT(V), torch.stack([r.jxT(V[:, j]) for j in range(4)], -1), rtol=1e-12, atol=1e-14)


def test_modes_agree_and_adjoint():
    m, X, Y = make('conv')
    rs = {mode: Risk(m, 'mse', X, Y, batch_size=5, hvp_mode=mode) for mode in MODES}
    g = torch.Generator().manual_seed(4)
    V = torch.randn(rs['rev_rev'].p, 3, dtype=D, generator=g); dX = torch.randn(X.shape + (3,), dtype=D, generator=g)
    ref = None
    for mode, r in rs.items():
        got = r.hvp(V), r.jx(dX), r.jxT(V)
        ref = ref or got
        for a, b in zip(got, ref): torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
        lhs = (got[1]*V).sum(0); rhs = (dX*got[2]).flatten(0, -2).sum(0)
        torch.testing.assert_close(lhs, rhs, rtol=1e-11, atol=1e-13)    # <J dX, U> = <dX, J^T U> per column
    # the symmetric H: <U, H V> = <H U, V>
    r = rs['fwd_rev']
    torch.testing.assert_close(V[:, 0] @ r.hvp(V[:, 1]), r.hvp(V[:, 0]) @ V[:, 1], rtol=1e-11, atol=1e-13)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), bs=st.integers(1, 10), k=st.integers(1, 3), seed=st.integers(0, 10**6),
       mode=st.sampled_from(MODES))
def test_property_chunks_and_adjoint(n, bs, k, seed, mode):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    X, Y = torch.randn(n, 2, dtype=D), torch.randint(0, 2, (n,))
    r = Risk(m, 'cross_entropy', X, Y, batch_size=bs, hvp_mode=mode)
    r0 = Risk(m, 'cross_entropy', X, Y)
    V, dX = torch.randn(r.p, k, dtype=D), torch.randn(n, 2, k, dtype=D)
    torch.testing.assert_close(r.hvp(V), r0.hvp(V), rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(r.jx(dX), r0.jx(dX), rtol=1e-11, atol=1e-13)
    torch.testing.assert_close((r.jx(dX)*V).sum(0), (dX*r.jxT(V)).sum((0, 1)), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- rows, subsets, at, grad_x
def test_jx_only_perturbed_rows():
    m, X, Y, w0, R, H, J = setup('relu')
    r = Risk(m, 'mse', X, Y, batch_size=2)
    seen = []
    hook = m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    dX = torch.zeros_like(X); dX[[1, 6, 9]] = torch.randn(3, DIN, dtype=D)
    try: got = r.jx(dX)
    finally: hook.remove()
    torch.testing.assert_close(got, J @ dX.reshape(-1), rtol=1e-10, atol=1e-12)
    assert sum(seen) == 3 and max(seen) <= 2          # only the 3 perturbed rows were evaluated
    assert torch.equal(r.jx(torch.zeros_like(X)), torch.zeros(r.p, dtype=D))


def test_memory_bound_rows_per_call():
    "No product ever runs the model on more than batch_size rows (so memory does not grow with n)."
    m, X, Y = make('bn')
    r = Risk(m, 'mse', X, Y, batch_size=3)
    seen = []
    hook = m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    try:
        V = torch.randn(r.p, 2, dtype=D)
        r.value(); r.grad(); r.grad_x(); r.hvp(V); r.jx(torch.randn(X.shape + (2,), dtype=D)); r.jxT(V)
    finally: hook.remove()
    assert seen and max(seen) <= 3


def test_grad_and_grad_x():
    m, X, Y, w0, R, H, J = setup('bn')
    r = Risk(m, 'mse', X, Y, batch_size=4)
    w = w0.clone().requires_grad_()
    torch.testing.assert_close(r.grad(), torch.autograd.grad(R(w), w)[0], rtol=1e-12, atol=1e-14)
    per = []
    for x, y in zip(X, Y):
        x = x.clone().requires_grad_()
        per.append(torch.autograd.grad(0.5*((m(x[None]) - y)**2).sum(), x)[0])
    torch.testing.assert_close(r.grad_x(), torch.stack(per), rtol=1e-12, atol=1e-14)


def test_params_subset():
    m, X, Y, w0, R, H, J = setup('relu')
    names = list(dict(m.named_parameters()))
    sel = ['2.weight', '4.bias']
    r = Risk(m, 'mse', X, Y, params=sel, vectorize=True)
    starts, i = {}, 0
    for k, v in m.named_parameters(): starts[k] = (i, i + v.numel()); i += v.numel()
    idx = torch.cat([torch.arange(*starts[k]) for k in sel])
    assert r.names == sel and r.p == len(idx)
    torch.testing.assert_close(r.hvp(torch.eye(r.p, dtype=D)), H[idx][:, idx], rtol=1e-10, atol=1e-12)
    dX = torch.randn_like(X)
    torch.testing.assert_close(r.jx(dX), (J @ dX.reshape(-1))[idx], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r.jxT(torch.ones(r.p, dtype=D)), (J[idx].T @ torch.ones(r.p, dtype=D)).reshape(X.shape),
                               rtol=1e-10, atol=1e-12)
    frozen = Risk(m, 'mse', X, Y, params=['0.weight'])
    assert frozen.p == m[0].weight.numel()


def test_at_and_cache_invalidation():
    m, X, Y, w0, R, H, J = setup('tanh')
    r = Risk(m, 'mse', X, Y, batch_size=4, hvp_mode='rev_rev_cached')
    V = torch.randn(r.p, dtype=D)
    h0 = r.hvp(V); assert len(r._cache) == 3
    torch.testing.assert_close(r.hvp(V), h0, rtol=0, atol=0)        # reused
    w1 = w0 + 0.3*torch.randn_like(w0); X1 = X + 0.2*torch.randn_like(X)
    r1 = r.at(w=w1, X=X1)
    assert r1._cache == {} and r.X is X and torch.equal(r.w, w0)
    H1 = torch.autograd.functional.hessian(lambda w: R(w, X1), w1)
    torch.testing.assert_close(r1.hvp(V), H1 @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r1.value(), R(w1, X1), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(r.hvp(V), h0, rtol=0, atol=0)        # the original is untouched
    # at(X=...) is what J dX differentiates: a finite-difference check in float64
    dX = torch.randn_like(X); t = 1e-6
    fd = (r.at(X=X + t*dX).grad() - r.at(X=X - t*dX).grad())/(2*t)
    torch.testing.assert_close(r.jx(dX), fd, rtol=1e-6, atol=1e-9)


def test_cross_entropy_and_dropout_eval_under_vmap():
    m, X, _ = make('bn')
    Yc = torch.randint(0, DOUT, (N,))
    r = Risk(m, 'cross_entropy', X, Yc, batch_size=5, vectorize=True)
    def Rce(w):
        d, i = {}, 0
        for k, v in m.named_parameters(): d[k] = w[i:i + v.numel()].view(v.shape); i += v.numel()
        return F.cross_entropy(torch.func.functional_call(m, d, (X,)), Yc)
    Hc = torch.autograd.functional.hessian(Rce, r.w)
    torch.testing.assert_close(r.hvp(torch.eye(r.p, dtype=D)), Hc, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- from_function
def _kernel(X):
    sq = (X*X).sum(1)
    return torch.exp(-0.5*(sq[:, None] + sq[None] - 2*X@X.T))

def test_from_function_kernel_ridge():
    torch.manual_seed(5)
    n, lam = 7, 0.3
    X, Y, a = torch.randn(n, 2, dtype=D), torch.randn(n, dtype=D), torch.randn(n, dtype=D)
    fn = lambda P, X, Y: ((_kernel(X) @ P['a'] - Y)**2).sum()/n + lam*P['a'] @ _kernel(X) @ P['a']
    for mode, vec in [(m_, v_) for m_ in MODES for v_ in (False, True)]:
        r = Risk.from_function(fn, {'a': a}, X, Y, hvp_mode=mode, vectorize=vec)
        K = _kernel(X)
        torch.testing.assert_close(r.hvp(torch.eye(n, dtype=D)), 2/n*K@K + 2*lam*K, rtol=1e-12, atol=1e-13)
        gclosed = lambda X_: 2/n*_kernel(X_)@(_kernel(X_)@a - Y) + 2*lam*_kernel(X_)@a
        torch.testing.assert_close(r.grad(), gclosed(X), rtol=1e-12, atol=1e-13)
        Jk = torch.autograd.functional.jacobian(gclosed, X).reshape(n, -1)
        dX = torch.randn(n, 2, 2, dtype=D); U = torch.randn(n, 2, dtype=D)
        torch.testing.assert_close(r.jx(dX), Jk @ dX.reshape(-1, 2), rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(r.jxT(U), (Jk.T @ U).reshape(n, 2, 2), rtol=1e-11, atol=1e-12)
        Xr = X.clone().requires_grad_()
        torch.testing.assert_close(r.grad_x(), n*torch.autograd.grad(fn({'a': a}, Xr, Y), Xr)[0], rtol=1e-12, atol=1e-13)
    assert r.n == n and r.p == n and r.names == ['a'] and r.batch_size is None


def test_from_function_cdist_loop_is_correct():
    "from_function loops over columns by default: correct even where PyTorch's vmap rule (cdist double backward) is not."
    torch.manual_seed(6)
    n = 6
    X, Y, a = torch.randn(n, 2, dtype=D), torch.randn(n, dtype=D), torch.randn(n, dtype=D)
    fn = lambda P, X, Y: ((torch.exp(-0.5*torch.cdist(X, X)**2) @ P['a'] - Y)**2).sum()/n
    r = Risk.from_function(fn, {'a': a}, X, Y)
    assert not r.vectorize
    gclosed = lambda X_: 2/n*_kernel(X_)@(_kernel(X_)@a - Y)
    Jk = torch.autograd.functional.jacobian(gclosed, X).reshape(n, -1)
    U = torch.randn(n, 3, dtype=D)
    torch.testing.assert_close(r.jxT(U), (Jk.T @ U).reshape(n, 2, 3), rtol=1e-11, atol=1e-12)
    with pytest.raises(NotImplementedError, match="use hvp_mode='rev_rev'"):
        Risk.from_function(fn, {'a': a}, X, Y, hvp_mode='fwd_rev').jx(torch.ones(n, 2, dtype=D))


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    m, X, Y = make('tanh')
    r = Risk(m, 'mse', X, Y)
    p = r.p
    def raises(exc, match, f):
        with pytest.raises(exc, match=match): f()
    raises(ValueError, 'V: expected shape', lambda: r.hvp(torch.zeros(p + 1, dtype=D)))
    raises(ValueError, 'V: expected shape', lambda: r.hvp(torch.zeros(p, 2, 2, dtype=D)))
    raises(ValueError, r'V, risk.w: different dtypes', lambda: r.hvp(torch.zeros(p)))
    raises(ValueError, r'V, risk.w: on different devices', lambda: r.hvp(torch.zeros(p, dtype=D, device='meta')))
    raises(ValueError, 'V: contains NaN', lambda: r.hvp(torch.full((p,), math.nan, dtype=D)))
    raises(TypeError, 'V: expected a torch.Tensor', lambda: r.hvp([1.]*p))
    raises(ValueError, 'dX: expected shape', lambda: r.jx(torch.zeros(N, DIN + 1, dtype=D)))
    raises(ValueError, 'dX: expected shape', lambda: r.jx(torch.zeros(N - 1, DIN, 2, dtype=D)))
    raises(ValueError, 'dX, X: different dtypes', lambda: r.jx(torch.zeros(N, DIN)))
    raises(ValueError, 'dX, X: on different devices', lambda: r.jx(torch.zeros(N, DIN, dtype=D, device='meta')))
    raises(ValueError, 'dX: contains NaN', lambda: r.jx(torch.full((N, DIN), math.inf, dtype=D)))
    raises(ValueError, 'U: expected shape', lambda: r.jxT(torch.zeros(p - 1, dtype=D)))
    raises(ValueError, 'U, risk.w: different dtypes', lambda: r.jxT(torch.zeros(p, dtype=torch.float32)))
    raises(ValueError, 'w: expected shape', lambda: r.at(w=torch.zeros(p - 1, dtype=D)))
    raises(ValueError, 'w: contains NaN', lambda: r.at(w=torch.full((p,), math.nan, dtype=D)))
    raises(ValueError, 'X: expected shape', lambda: r.at(X=torch.zeros(N + 1, DIN, dtype=D)))
    raises(ValueError, 'v: expected shape', lambda: r.unflatten(torch.zeros(p + 1, dtype=D)))
    raises(ValueError, 'd: expected the keys', lambda: r.flatten({'0.weight': torch.zeros(5, DIN, dtype=D)}))
    # data and weights
    Xn = X.clone(); Xn[3, 1] = math.nan
    raises(ValueError, 'X: contains NaN', lambda: Risk(m, 'mse', Xn, Y))
    Yn = Y.clone(); Yn[0, 0] = math.inf
    raises(ValueError, 'Y: contains NaN', lambda: Risk(m, 'mse', X, Yn))
    raises(ValueError, 'X, Y: expected the same number of rows', lambda: Risk(m, 'mse', X, Y[:-1]))
    raises(ValueError, 'X, parameters: different dtypes', lambda: Risk(m, 'mse', X.float(), Y))
    raises(TypeError, 'Y: expected a tensor', lambda: Risk(m, 'mse', X, None))
    mn = make('tanh')[0]
    with torch.no_grad(): mn[0].weight[0, 0] = math.nan
    raises(ValueError, "model: parameter '0.weight' contains NaN", lambda: Risk(mn, 'mse', X, Y))
    # losses
    raises(ValueError, r'loss: must return per-example losses shaped \(b,\)', lambda: Risk(m, lambda o, y: ((o - y)**2).mean(), X, Y))
    raises(ValueError, r'loss: must return per-example losses shaped \(b,\)', lambda: Risk(m, lambda o, y: (o - y)**2, X, Y))
    raises(ValueError, 'loss: expected a callable or one of', lambda: Risk(m, 'hinge', X, Y))
    raises(ValueError, "Y: 'mse' needs targets", lambda: Risk(m, 'mse', X, Y[:, :1]))
    raises(ValueError, 'fn: must return a 0-d tensor',
           lambda: Risk.from_function(lambda P, X, Y: P['a']*X.sum(), {'a': torch.ones(2, dtype=D)}, X).grad())
    # modes, options, parameter names
    raises(ValueError, 'hvp_mode: expected one of', lambda: Risk(m, 'mse', X, Y, hvp_mode='linearized'))
    raises(ValueError, 'batch_size: must be > 0', lambda: Risk(m, 'mse', X, Y, batch_size=0))
    raises(TypeError, 'batch_size: expected a positive int', lambda: Risk(m, 'mse', X, Y, batch_size=2.5))
    raises(ValueError, "params: unknown parameter name 'nope'", lambda: Risk(m, 'mse', X, Y, params=['nope']))
    raises(ValueError, 'params: the list of parameter names is empty', lambda: Risk(m, 'mse', X, Y, params=[]))
    raises(TypeError, 'model: expected an nn.Module', lambda: Risk(lambda x: x, 'mse', X, Y))


@pytest.mark.parametrize('layer', [nn.BatchNorm1d(5), nn.Dropout(0.5)])
def test_train_mode_refused(layer):
    m = nn.Sequential(nn.Linear(DIN, 5), layer, nn.Linear(5, DOUT)).double()
    X, Y = torch.randn(N, DIN, dtype=D), torch.randn(N, DOUT, dtype=D)
    with pytest.raises(ValueError, match=r'call model.eval\(\)'): Risk(m, 'mse', X, Y)
    assert m.training                                           # never switched silently
    r = Risk(m.eval(), 'mse', X, Y)
    m.train()                                                   # switched back after construction: refused at use
    with pytest.raises(ValueError, match=r'call model.eval\(\)'): r.hvp(torch.zeros(r.p, dtype=D))
    with pytest.raises(ValueError, match=r'call model.eval\(\)'): check_eval_mode(m)
