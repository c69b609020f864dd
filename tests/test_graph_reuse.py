"""Issue 17: a solve reuses each chunk's recorded gradient graph (`Risk.reusing`, `graph_cache` bytes), with the same bits.

The products inside `risk.reusing()` must equal the products outside it exactly (the same ops on the same tensors; for a
model with eval-mode BatchNorm, a kept graph records it as x·s + t and the products agree to rounding), the
solvers must record each chunk once per solve instead of once per product, the byte budget must bound what is kept,
and leaving the context (also by an exception) must free the graphs.
"""
import math
import pytest, torch
from torch import nn
import setsens.risk as sr
from setsens.risk import Risk
from setsens.core import BytesCreated as _Produced
from setsens.krylov import minres, cgls, lsqr
from setsens.linalg import lanczos
from setsens.pinv import pinv_solve


DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def _risk(device='cpu', **kw):
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():                  # the same weights in every call, the global RNG untouched
        torch.manual_seed(0); model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double().to(device)
    X, Y = torch.randn(32, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)
    return Risk(model, 'cross_entropy', X.to(device), Y.to(device), batch_size=8, **kw)   # 4 chunks


@pytest.fixture
def records(monkeypatch):
    "Counts the chunk recordings (`vjp` calls in setsens.risk)."
    n = [0]
    real = sr.vjp
    def counting(*a, **k): n[0] += 1; return real(*a, **k)
    monkeypatch.setattr(sr, 'vjp', counting)
    return n


@pytest.mark.parametrize('device', DEVICES)
def test_products_inside_reusing_are_the_same_bits_and_leaving_frees_them(records, device):
    r = _risk(device)
    V = torch.randn(r.p, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    h0, H0 = r.hvp(V[:, 0]), r.hvp(V)
    assert records[0] == 8 and not r._cache
    with r.reusing():
        h1 = r.hvp(V[:, 0]); assert len(r._cache) == 4
        h2, H2 = r.hvp(V[:, 0]), r.hvp(V)
    assert records[0] == 12                        # inside: each chunk recorded once for three products
    assert torch.equal(h0, h1) and torch.equal(h0, h2) and torch.equal(H0, H2)
    assert not r._cache and r._reuse == 0


def test_an_exception_inside_still_frees_and_nesting_frees_at_the_outermost_exit():
    r = _risk()
    v = torch.ones(r.p, dtype=torch.float64)
    with pytest.raises(KeyError):
        with r.reusing(): r.hvp(v); raise KeyError('x')
    assert not r._cache and r._reuse == 0
    with r.reusing():
        with r.reusing(): r.hvp(v)
        assert len(r._cache) == 4                  # the inner exit keeps them
    assert not r._cache


@pytest.mark.parametrize('solve', ['minres', 'cgls', 'lsqr', 'pinv', 'lanczos'])
def test_each_solver_records_each_chunk_once(records, solve):
    b = torch.randn(_risk().p, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    run = {'minres': lambda r: minres(r.H, b, maxiter=30, warn=False)[0],
           'cgls': lambda r: cgls(r.H + 0.1*r.I, b, maxiter=30, warn=False)[0],
           'lsqr': lambda r: lsqr(2.0*r.H, b, maxiter=30, warn=False)[0],
           'pinv': lambda r: pinv_solve(r, b, maxiter=40, warn=False)[0],
           'lanczos': lambda r: lanczos(r.H, r.p, 25, r.dtype, r.device)[0]}[solve]
    x_off = run(_risk(graph_cache=0)); off = records[0]
    records[0] = 0
    r = _risk()
    x_on = run(r)
    assert off > 4*20                               # without reuse: every product records every chunk
    assert records[0] == 4                          # with it: once per chunk for the whole solve
    assert torch.equal(x_on, x_off) and not r._cache


def test_the_budget_bounds_what_is_kept(records):
    r = _risk()
    v = torch.ones(r.p, dtype=torch.float64)
    with _Produced() as made: held = sr.vjp(lambda w: sr.grad_and_value(r._fsum)(w, r._X[:8], r._Y[:8]), r.w, has_aux=True)
    one = made.kept()                               # what one chunk's recorded graph holds
    assert 0 < one < made.nbytes
    del held; assert made.kept() == 0
    records[0] = 0
    r2 = _risk(graph_cache=2.5*one)                 # room for two of the four chunks
    with r2.reusing():
        outs = [r2.hvp(v) for _ in range(3)]
        assert len(r2._cache) == 2
    assert records[0] == 4 + 2 + 2                  # the two kept ones once, the other two per product
    assert all(torch.equal(o, r.hvp(v)) for o in outs)


def test_the_byte_count_sees_new_tensors_and_not_views():
    x = torch.randn(100, 30, dtype=torch.float64)
    with _Produced() as m: x.t(); x.view(-1); x[:10]
    assert m.nbytes == 0
    with _Produced() as m: y = x*2; (x + 1).sum()
    assert m.nbytes == 100*30*8*2 + 8 and m.kept() == 100*30*8   # only y outlives the block
    lin = nn.Linear(30, 50).double()
    with _Produced() as m: lin(x).sum()
    assert m.nbytes >= 100*50*8                     # at least the layer's output


def test_rev_rev_cached_keeps_and_fwd_rev_keeps_nothing():
    v = torch.ones(_risk().p, dtype=torch.float64)
    r = _risk(hvp_mode='rev_rev_cached')
    with r.reusing(): r.hvp(v)
    assert len(r._cache) == 4                       # kept for the risk's life, as before
    f = _risk(hvp_mode='fwd_rev')
    with f.reusing(): hf = f.hvp(v)
    assert not f._cache
    torch.testing.assert_close(hf, _risk().hvp(v), rtol=1e-10, atol=1e-12)


def test_operators_enter_their_risk_and_copies_start_fresh():
    r = _risk()
    with (r.H + 0.5*r.I).reusing(): assert r._reuse == 1
    with (3.0*r.H).T.reusing(): assert r._reuse == 1
    with r.J.reusing(): assert r._reuse == 0        # J's products record other graphs: nothing to keep
    from setsens.linalg import reusing_of
    with reusing_of(r.H): assert r._reuse == 1
    with reusing_of(r.hvp), reusing_of(torch.eye(2)): assert r._reuse == 0   # a callable, a matrix: nothing
    with r.reusing():
        r.hvp(torch.ones(r.p, dtype=torch.float64))
        c = r.at(w=r.w.clone())
        assert c._reuse == 0 and not c._cache and len(r._cache) == 4


@pytest.mark.parametrize('bad, err', [(-1, ValueError), (math.nan, ValueError), ('2GB', TypeError)])
def test_graph_cache_is_validated(bad, err):
    with pytest.raises(err, match='graph_cache'): _risk(graph_cache=bad)
    assert _risk(graph_cache=math.inf).graph_cache == math.inf


def test_the_default_budget_is_2_gib_on_the_cpu():
    r = _risk()
    assert r.graph_cache is None
    with r.reusing(): assert r._room == 2**31
    with _risk(graph_cache=1234).reusing() as r2: assert r2._room == 1234


def test_a_sharded_risk_reuses_its_local_graphs_and_cuda_defaults_to_a_quarter_of_free_memory(monkeypatch):
    from types import SimpleNamespace
    from setsens.distributed import DistributedRisk
    r = _risk()
    with DistributedRisk.reusing(SimpleNamespace(local=r)): assert r._reuse == 1   # the rank's own chunks
    assert r._reuse == 0
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda d=None: (8*2**30, 80*2**30))
    assert sr._room_for(None, torch.device('cuda')) == 2*2**30
    assert sr._room_for(None, torch.device('cpu')) == 2**31 and sr._room_for(5.0, torch.device('cuda')) == 5.0


def test_a_streamed_loader_and_a_function_risk_reuse_too(records):
    "A DataLoader source (chunks re-read every product) and `Risk.from_function`: once per chunk, the same bits."
    from torch.utils.data import DataLoader, TensorDataset
    r = _risk()
    b = torch.randn(r.p, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loader = DataLoader(TensorDataset(r._X, r._Y), batch_size=8)
    streamed = Risk(r.model, 'cross_entropy', loader)
    x_off = minres(Risk(r.model, 'cross_entropy', loader, graph_cache=0).H, b, maxiter=20, warn=False)[0]
    records[0] = 0
    x_on = minres(streamed.H, b, maxiter=20, warn=False)[0]
    assert records[0] == 4 and torch.equal(x_on, x_off)
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fn = lambda prm, X, Y: torch.tanh(X @ prm['w']).pow(2).sum() + (prm['w'] @ A @ prm['w'])**2
    f = Risk.from_function(fn, {'w': torch.randn(6, dtype=torch.float64)}, torch.randn(5, 6, dtype=torch.float64))
    v = torch.ones(6, dtype=torch.float64)
    records[0] = 0
    with f.reusing(): h = [f.hvp(v) for _ in range(3)]
    assert records[0] == 1 and all(torch.equal(h[0], x) for x in h) and torch.equal(h[0], f.hvp(v))


def test_products_are_recorded_under_fast_second_order(monkeypatch):
    "Every reverse-over-reverse product (HVP, J ΔX, Jᵀ U) records its gradient graph under `FastSecondOrder`\n    (convolutions differentiated twice through the native kernels, the eval-mode BatchNorm after a convolution folded\n    into it): inside a solve once per chunk, outside once per product. All are the exact derivatives: equal to dense\n    ones (torch.func.hessian / jacrev without the mode), and to each other to rounding."
    import torch.nn.functional as F
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 3)).double()
        with torch.no_grad():
            bn = model[1]; bn.running_mean.uniform_(-1, 1); bn.running_var.uniform_(0.5, 2); bn.weight.uniform_(0.5, 2); bn.bias.uniform_(-1, 1)
    model.eval()
    g = torch.Generator().manual_seed(2)
    X, Y = torch.randn(16, 2, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    r = Risk(model, 'cross_entropy', X, Y, batch_size=8)                      # 2 chunks, one BatchNorm each
    calls = {'bn': 0, 'folded': 0}
    class Counting(sr.FastSecondOrder):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = super().__torch_function__(func, types, args, kwargs)
            if func is F.batch_norm: calls['bn'] += 1; calls['folded'] += 'Conv' in type(out.grad_fn.next_functions[0][0]).__name__
            return out
    monkeypatch.setattr(sr, 'FastSecondOrder', Counting)
    loss = lambda w, X_: F.cross_entropy(torch.func.functional_call(model, r.unflatten(w), (X_,)), Y)
    H = torch.func.hessian(loss)(r.w, X)                                       # PyTorch's kernels, dense
    V = torch.randn(r.p, 2, generator=g, dtype=torch.float64)
    h_out = r.hvp(V)
    assert calls == {'bn': 2, 'folded': 2}                                     # a single product: each chunk recorded, folded
    with r.reusing():
        h_in, h_in2 = r.hvp(V), r.hvp(V)
    assert calls == {'bn': 4, 'folded': 4}                                     # inside a solve: each chunk recorded once
    rel = lambda a, b: float((a - b).norm()/b.norm())
    assert rel(h_out, H @ V) < 1e-12 and rel(h_in, H @ V) < 1e-12 and rel(h_in, h_out) < 1e-13
    assert torch.equal(h_in, h_in2)
    Jd = torch.func.jacrev(lambda X_: torch.func.grad(loss)(r.w, X_))(X).reshape(r.p, -1)   # dense J = ∂²R/∂w∂X
    dX, U = torch.randn(X.shape, generator=g, dtype=torch.float64), torch.randn(r.p, generator=g, dtype=torch.float64)
    assert rel(r.jx(dX), Jd @ dX.reshape(-1)) < 1e-12 and rel(r.jxT(U).reshape(-1), Jd.T @ U) < 1e-12
    assert calls['bn'] == 8                                                    # jx and jxT: each chunk recorded under the mode
