"""`Risk` takes what PyTorch users arrive with: torch.nn / torch.nn.functional losses (mean or sum reduction) and
data as a DataLoader, a map-style Dataset or any re-iterable of (X, y) batches.

Expected values are computed independently: the user's own loss evaluated once on all n rows in float64 (model
called through `torch.func.functional_call` with a parameter dict split here, not by `Risk`), its gradient by
`torch.autograd.grad` and its Hessian by `torch.func.hessian`. Streamed data are compared with the in-memory
`Risk(model, loss, X, Y)` on the same rows.
"""
import functools
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian
from torch.utils.data import DataLoader, Dataset, TensorDataset

from setsens.risk import Risk

f64 = torch.float64
N, D, C = 11, 3, 4          # 11 rows: chunks of 4 leave an uneven last chunk of 3
MODES = ('rev_rev', 'fwd_rev', 'rev_rev_cached')


def close(a, b, tol):
    torch.testing.assert_close(a, b, atol=tol, rtol=0)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 5), nn.Tanh(), nn.Linear(5, C)).double()


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, dtype=f64, generator=g)
    Yc = torch.randint(0, C, (N,), generator=g)                           # class targets
    Yr = torch.randn(N, C, dtype=f64, generator=g)                        # regression targets
    Yp = torch.softmax(torch.randn(N, C, dtype=f64, generator=g), 1)      # probabilities (soft labels, BCE targets)
    return X, Yc, Yr, Yp


def reference(model, loss, X, Y):
    "R(w) = the user's loss on all rows at once, as a function of a flat w split here; w0, R(w0), ∇R(w0), ∇²R(w0)."
    named = [(k, v) for k, v in model.named_parameters()]
    w0 = torch.cat([v.detach().reshape(-1) for _, v in named])

    def R(w):
        d, i = {}, 0
        for k, v in named:
            d[k] = w[i:i + v.numel()].view(v.shape); i += v.numel()
        l = loss(functional_call(model, d, (X,)), Y)
        return l.mean() if l.ndim == 1 else l     # per-example losses: R is their mean

    w = w0.clone().requires_grad_()
    val = R(w)
    g = torch.autograd.grad(val, w)[0]
    return w0, val.detach(), g, hessian(R)(w0)


# -- 1. the four calls of the issue, against the user's own loss on all data -----------------------------------------
def four_cases():
    X, Yc, Yr, _ = data()
    return {
        'F.cross_entropy': (lambda: F.cross_entropy, (X, Yc), F.cross_entropy, Yc),
        'nn.CrossEntropyLoss': (lambda: nn.CrossEntropyLoss(), (X, Yc), nn.CrossEntropyLoss(), Yc),
        'nn.MSELoss': (lambda: nn.MSELoss(), (X, Yr), nn.MSELoss(), Yr),
        'str+DataLoader': (lambda: 'cross_entropy', (DataLoader(TensorDataset(X, Yc), batch_size=4),),
                           F.cross_entropy, Yc),
    }


@pytest.mark.parametrize('case', list(four_cases()))
@pytest.mark.parametrize('bs', [None, 4])
def test_four_calls_equal_the_users_loss(case, bs):
    X = data()[0]
    make_loss, args, user_loss, Y = four_cases()[case]
    m = mlp()
    if len(args) == 1 and bs is not None: pytest.skip('a DataLoader brings its own batches')
    r = Risk(m, make_loss(), *args, batch_size=bs)
    w0, val, g, H = reference(m, user_loss, X, Y)
    assert r.n == N and torch.equal(r.w, w0)
    close(r.value(), val, 1e-10)
    close(r.grad(), g, 1e-10)
    V = torch.randn(r.p, 3, dtype=f64, generator=torch.Generator().manual_seed(2))
    close(r.hvp(V), H @ V, 1e-10)
    close(r.hvp(V[:, 0]), H @ V[:, 0], 1e-10)


# -- 2. mean and sum reductions, uneven chunks, weighted means ---------------------------------------------------------
def reduced_cases():
    X, Yc, Yr, Yp = data()
    wt = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=f64)
    Yi = Yc.clone(); Yi[4:8] = -1                       # the middle chunk of 4 is entirely ignored
    bce = torch.rand(N, C, dtype=f64, generator=torch.Generator().manual_seed(3))
    return {
        # name: (loss given to Risk, extra Risk kwargs, targets)
        'MSELoss-mean': (nn.MSELoss(), {}, Yr),
        'MSELoss-sum': (nn.MSELoss(reduction='sum'), {}, Yr),
        'F.mse_loss': (F.mse_loss, {}, Yr),
        'partial-mse-sum': (functools.partial(F.mse_loss, reduction='sum'), {}, Yr),
        'BCEWithLogits-mean': (nn.BCEWithLogitsLoss(), {}, bce),
        'BCEWithLogits-sum': (nn.BCEWithLogitsLoss(reduction='sum'), {}, bce),
        'Huber-mean': (nn.HuberLoss(delta=0.5), {}, Yr),
        'CE-sum': (nn.CrossEntropyLoss(reduction='sum'), {}, Yc),
        'CE-weight-ignore-smooth': (nn.CrossEntropyLoss(weight=wt, ignore_index=-1, label_smoothing=0.1), {}, Yi),
        'F.ce-partial-weight': (functools.partial(F.cross_entropy, weight=wt, ignore_index=-1), {}, Yi),
        'NLL-weight': (nn.NLLLoss(weight=wt), {}, Yc),
        'CE-soft-labels': (nn.CrossEntropyLoss(weight=wt), {}, Yp),
        'KLDiv-batchmean': (lambda o, y: F.kl_div(F.log_softmax(o, 1), y, reduction='batchmean'), {'reduction': 'mean'}, Yp),
        'lambda-mean': (lambda o, y: ((o - y)**2).mean(), {'reduction': 'mean'}, Yr),
        'lambda-sum': (lambda o, y: ((o - y)**2).sum(), {'reduction': 'sum'}, Yr),
        'per-example': (lambda o, y: (o - y).pow(2).sum(1), {}, Yr),
    }


@pytest.mark.parametrize('case', list(reduced_cases()))
@pytest.mark.parametrize('bs', [None, 4, 1])
def test_reductions_equal_the_users_loss_on_all_data(case, bs):
    X = data()[0]
    loss, kw, Y = reduced_cases()[case]
    m = mlp()
    r = Risk(m, loss, X, Y, batch_size=bs, **kw)
    w0, val, g, H = reference(m, loss, X, Y)
    close(r.value(), val, 1e-10)
    close(r.grad(), g, 1e-10)
    V = torch.randn(r.p, 2, dtype=f64, generator=torch.Generator().manual_seed(4))
    close(r.hvp(V), H @ V, 1e-10)
    # and streamed through a DataLoader with the same (uneven) batches
    if bs is not None:
        rl = Risk(m, loss, DataLoader(TensorDataset(X, Y), batch_size=bs), **kw)
        close(rl.value(), val, 1e-10)
        close(rl.grad(), g, 1e-10)
        close(rl.hvp(V), H @ V, 1e-10)


def test_reduction_is_reported():
    X, Yc, Yr, _ = data()
    m = mlp()
    assert Risk(m, 'mse', X, Yr).reduction == 'none'
    assert Risk(m, lambda o, y: (o - y).pow(2).sum(1), X, Yr).reduction == 'none'
    assert Risk(m, F.cross_entropy, X, Yc).reduction == 'mean'
    assert Risk(m, nn.MSELoss(reduction='sum'), X, Yr).reduction == 'sum'
    assert Risk(m, nn.MSELoss(), X, Yr, reduction='mean').reduction == 'mean'   # agreeing with the loss is fine


def test_user_module_is_not_modified():
    X, Yc, _, _ = data()
    ce = nn.CrossEntropyLoss(ignore_index=2)
    r = Risk(mlp(), ce, X, Yc, batch_size=4)
    r.grad()
    assert ce.reduction == 'mean'


# -- 3. streamed data against the same rows in memory -------------------------------------------------------------------
class Rows(Dataset):
    "A map-style dataset returning one (x, y) per index (collated by default_collate)."
    def __init__(self, X, Y): self.X, self.Y = X, Y
    def __len__(self): return len(self.X)
    def __getitem__(self, i): return self.X[i], self.Y[i]


class Batches:
    "A re-iterable of (X, y) batches that is not a list."
    def __init__(self, X, Y, b): self.X, self.Y, self.b = X, Y, b
    def __iter__(self):
        for i in range(0, len(self.X), self.b): yield self.X[i:i + self.b], self.Y[i:i + self.b]


def sources(X, Y):
    return {
        'DataLoader': (DataLoader(TensorDataset(X, Y), batch_size=4), {}),
        'DataLoader(Dataset)': (DataLoader(Rows(X, Y), batch_size=4), {}),
        'TensorDataset': (TensorDataset(X, Y), {'batch_size': 4}),
        'Dataset': (Rows(X, Y), {'batch_size': 4}),
        'Dataset-one-chunk': (Rows(X, Y), {}),
        'list': ([(X[i:i + 4], Y[i:i + 4]) for i in range(0, N, 4)], {}),
        're-iterable': (Batches(X, Y, 4), {}),
    }


LOSSES = {'mse': ('mse', 'r'), 'F.cross_entropy': (F.cross_entropy, 'c'), 'MSELoss-sum': (nn.MSELoss(reduction='sum'), 'r'),
          'CE-weight-ignore': (nn.CrossEntropyLoss(weight=torch.tensor([1., 2., .5, 1.5], dtype=f64), ignore_index=1), 'c')}


@pytest.mark.parametrize('src', list(sources(*data()[:2])))
@pytest.mark.parametrize('lname', list(LOSSES))
@pytest.mark.parametrize('mode', MODES)
def test_streamed_equals_in_memory(src, lname, mode):
    X, Yc, Yr, _ = data()
    loss, t = LOSSES[lname]
    Y = Yc if t == 'c' else Yr
    m = mlp()
    source, kw = sources(X, Y)[src]
    r = Risk(m, loss, source, hvp_mode=mode, **kw)
    ref = Risk(m, loss, X, Y, batch_size=kw.get('batch_size', 4 if src not in ('Dataset-one-chunk',) else None), hvp_mode=mode)
    assert r.n == N
    assert torch.equal(r.X, X) and torch.equal(r.Y, Y)
    tol = 1e-12
    close(r.value(), ref.value(), tol)
    close(r.grad(), ref.grad(), tol)
    close(r.grad_x(), ref.grad_x(), tol)
    g = torch.Generator().manual_seed(5)
    V = torch.randn(r.p, 3, dtype=f64, generator=g)
    close(r.hvp(V), ref.hvp(V), tol)
    close(r.hvp(V[:, 1]), ref.hvp(V[:, 1]), tol)          # twice: the cached mode replays its graphs
    dX = torch.randn(N, D, 2, dtype=f64, generator=g)
    close(r.jx(dX), ref.jx(dX), tol)
    dXK = torch.zeros(N, D, dtype=f64); dXK[[2, 9]] = torch.randn(2, D, dtype=f64, generator=g)   # rows K = {2, 9}
    close(r.jx(dXK), ref.jx(dXK), tol)
    close(r.jx(torch.zeros(N, D, dtype=f64)), torch.zeros(r.p, dtype=f64), 0)
    U = torch.randn(r.p, 2, dtype=f64, generator=g)
    close(r.jxT(U), ref.jxT(U), tol)
    close(r.jxT(U[:, 0]), ref.jxT(U[:, 0]), tol)
    # at(w=...) works on streamed data
    w1 = r.w + 0.01*V[:, 0]
    close(r.at(w=w1).grad(), ref.at(w=w1).grad(), tol)


def test_streamed_equals_explicit_derivatives():
    "The streamed products against torch.func.hessian / jacobian of the user's loss on all rows (not just the in-memory Risk)."
    X, Yc, _, _ = data()
    m = mlp()
    r = Risk(m, F.cross_entropy, DataLoader(TensorDataset(X, Yc), batch_size=4))
    w0, val, g, H = reference(m, F.cross_entropy, X, Yc)
    close(r.value(), val, 1e-10); close(r.grad(), g, 1e-10)
    V = torch.randn(r.p, 2, dtype=f64)
    close(r.hvp(V), H @ V, 1e-10)
    names = [k for k, _ in m.named_parameters()]; shapes = [v.shape for _, v in m.named_parameters()]

    def gradR(Xa):   # ∇_w of the user's loss on all rows, as a function of the inputs
        def R(w):
            d = dict(zip(names, [t.view(s) for t, s in zip(w.split([s.numel() for s in shapes]), shapes)]))
            return F.cross_entropy(functional_call(m, d, (Xa,)), Yc)
        return torch.func.grad(R)(w0)
    J = torch.func.jacrev(gradR)(X).reshape(r.p, -1)
    dX = torch.randn(N, D, dtype=f64); U = torch.randn(r.p, dtype=f64)
    close(r.jx(dX), J @ dX.reshape(-1), 1e-10)
    close(r.jxT(U), (J.T @ U).reshape(N, D), 1e-10)


# -- 4. bad input: clear errors that name the argument ----------------------------------------------------------------
def test_shuffling_loader_is_refused():
    X, _, Yr, _ = data()
    with pytest.raises(ValueError, match=r'data: the DataLoader draws its rows at random \(RandomSampler.*shuffle=False'):
        Risk(mlp(), 'mse', DataLoader(TensorDataset(X, Yr), batch_size=4, shuffle=True))


def test_one_shot_iterators_are_refused():
    X, _, Yr, _ = data()
    gen = ((X[i:i + 4], Yr[i:i + 4]) for i in range(0, N, 4))
    with pytest.raises(TypeError, match=r'data: got a one-shot iterator \(generator\).*every product .* new pass'):
        Risk(mlp(), 'mse', gen)
    with pytest.raises(TypeError, match=r'data: got a one-shot iterator'):
        Risk(mlp(), 'mse', iter([(X, Yr)]))


def test_wrong_shaped_loss_output():
    X, _, Yr, _ = data()
    with pytest.raises(ValueError, match=r'loss: must return per-example losses shaped \(b,\) = \(2,\), got \(2, 4\)'):
        Risk(mlp(), lambda o, y: (o - y)**2, X, Yr)
    with pytest.raises(ValueError, match=r'loss: must return per-example losses shaped \(b,\) = \(2,\), got \(2, 4\)'):
        Risk(mlp(), nn.MSELoss(reduction='none'), X, Yr)
    with pytest.raises(ValueError, match=r"loss: its reduction is 'mean', so it must return a 0-d tensor.*got \(2,\)"):
        Risk(mlp(), lambda o, y: (o - y).pow(2).sum(1), X, Yr, reduction='mean')
    with pytest.raises(ValueError, match=r'loss: must return per-example losses'):   # the same through a loader
        Risk(mlp(), lambda o, y: (o - y)**2, DataLoader(TensorDataset(X, Yr), batch_size=4))


def test_reduced_loss_of_unknown_reduction():
    X, _, Yr, _ = data()
    msg = r"loss: must return per-example losses .* returned a scalar and does not state its reduction.*pass reduction='mean' to Risk"
    with pytest.raises(ValueError, match=msg):
        Risk(mlp(), lambda o, y: ((o - y)**2).mean(), X, Yr)
    with pytest.raises(ValueError, match=msg):
        Risk(mlp(), lambda o, y: ((o - y)**2).mean(), DataLoader(TensorDataset(X, Yr), batch_size=4))
    with pytest.raises(ValueError, match=r"reduction: the loss states reduction='mean' \(MSELoss.reduction\) but reduction='sum'"):
        Risk(mlp(), nn.MSELoss(), X, Yr, reduction='sum')
    with pytest.raises(ValueError, match=r"reduction: the loss states reduction='mean' \(the default of cross_entropy"):
        Risk(mlp(), F.cross_entropy, X, Yr.argmax(1), reduction='sum')
    with pytest.raises(ValueError, match=r"reduction: expected None .* got 'avg'"):
        Risk(mlp(), lambda o, y: ((o - y)**2).mean(), X, Yr, reduction='avg')
    with pytest.raises(ValueError, match=r"reduction: the loss 'mse' is per-example"):
        Risk(mlp(), 'mse', X, Yr, reduction='mean')


def test_all_targets_ignored():
    X, Yc, _, _ = data()
    with pytest.raises(ValueError, match=r'Y: every target equals ignore_index=-100'):
        Risk(mlp(), F.cross_entropy, X, torch.full_like(Yc, -100))
    with pytest.raises(ValueError, match=r'data: every target equals ignore_index=-100'):
        Risk(mlp(), F.cross_entropy, DataLoader(TensorDataset(X, torch.full_like(Yc, -100)), batch_size=4))


def test_batches_of_different_structure():
    X, _, Yr, _ = data()
    bad = [(X[:4], Yr[:4]), (X[4:8, :2], Yr[4:8])]
    with pytest.raises(ValueError, match=r'data: batch 1 has input rows \(2,\).*but the first batch had input rows \(3,\)'):
        Risk(mlp(), 'mse', bad)
    bad = [(X[:4], Yr[:4]), (X[4:8], Yr[4:8].float())]
    with pytest.raises(ValueError, match=r'data: batch 1 has .*torch.float32 but the first batch had'):
        Risk(mlp(), 'mse', bad)
    with pytest.raises(ValueError, match=r'data: batch 0 is a Tensor, expected a pair \(X, y\)'):
        Risk(mlp(), 'mse', [X, Yr])
    with pytest.raises(ValueError, match=r'data: batch 1 has inputs \(4, 3\) and targets \(3, 4\)'):
        Risk(mlp(), 'mse', [(X[:4], Yr[:4]), (X[4:8], Yr[4:7])])
    with pytest.raises(ValueError, match=r'data \(its inputs\), parameters: different dtypes'):
        Risk(mlp(), 'mse', [(X.float(), Yr)])
    with pytest.raises(ValueError, match=r'data: the inputs of batch 1 contain NaN'):
        Xn = X.clone(); Xn[5, 0] = float('nan')
        Risk(mlp(), 'mse', DataLoader(TensorDataset(Xn, Yr), batch_size=4))
    with pytest.raises(ValueError, match=r'data: has no batches'):
        Risk(mlp(), 'mse', [])


class Growing(Rows):
    "A dataset whose length changes between passes."
    def __init__(self, X, Y): super().__init__(X, Y); self.passes = 0
    def __len__(self): return len(self.X) - 1 + min(self.passes, 1)
    def __getitem__(self, i):
        if i == 0: self.passes += 1
        return self.X[i], self.Y[i]


def test_length_change_between_passes():
    X, _, Yr, _ = data()
    r = Risk(mlp(), 'mse', DataLoader(Growing(X, Yr), batch_size=4))
    with pytest.raises(ValueError, match=r'data: .*rows .*changed between passes'):
        r.value()
    # and a list that is changed in place after construction
    batches = [(X[i:i + 4], Yr[i:i + 4]) for i in range(0, N, 4)]
    r = Risk(mlp(), 'mse', batches)
    batches.pop()
    with pytest.raises(ValueError, match=r'data: has 8 rows on this pass but 11 on the first'):
        r.grad()


def test_other_misuse():
    X, _, Yr, _ = data()
    dl = DataLoader(TensorDataset(X, Yr), batch_size=4)
    with pytest.raises(TypeError, match=r'Y: the data \(DataLoader\) carry their targets'):
        Risk(mlp(), 'mse', dl, Yr)
    with pytest.raises(ValueError, match=r'batch_size: the batches of data \(DataLoader\) are the chunks'):
        Risk(mlp(), 'mse', dl, batch_size=4)
    with pytest.raises(TypeError, match=r'X: expected a torch.Tensor \(with Y\), or data: a DataLoader'):
        Risk(mlp(), 'mse', 3.0)
    r = Risk(mlp(), 'mse', dl)
    with pytest.raises(NotImplementedError, match=r'X: at\(X=...\) moves in-memory data'):
        r.at(X=X)
    with pytest.raises(ValueError, match=r'dX: expected shape \(11, 3\)'):
        r.jx(torch.zeros(10, 3, dtype=f64))
    with pytest.raises(ValueError, match=r'dX, parameters: different dtypes'):
        r.jx(torch.zeros(N, D))
