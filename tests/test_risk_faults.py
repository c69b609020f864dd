"""The risk is a function of (w, X), or an error (issue 15, items 1 and 2).

Hidden randomness or state in the model, a loss that is not twice differentiable, and bad rows anywhere in the
data (not only the first rows the constructor probes) are refused with an error that names the argument, the
submodule or the row; sound models pass (their values checked against plain PyTorch on all rows at once)."""
import pytest, torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.data import DataLoader, TensorDataset
from setsens.risk import Risk

D = torch.float64


def _data(n=10, d=3, c=4, dtype=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=dtype, generator=g), torch.randint(0, c, (n,), generator=g)


def _mlp(d=3, c=4, dtype=D):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, c)).to(dtype)


class LSTMHead(nn.Module):
    "An LSTM over a sequence, classifying from the last step (the model output is one tensor)."
    def __init__(self, d=3, c=4, dropout=0.5):
        super().__init__()
        self.lstm, self.head = nn.LSTM(d, 5, num_layers=2, dropout=dropout, batch_first=True), nn.Linear(5, c)
    def forward(self, x): return self.head(self.lstm(x)[0][:, -1])


class HardDropout(nn.Module):
    "Dropout hard-coded in forward: random in eval mode too."
    def __init__(self):
        super().__init__(); self.lin = nn.Linear(3, 4)
    def forward(self, x): return self.lin(F.dropout(x, 0.5, training=True))


class FunctionalBatchNorm(nn.Module):
    "Batch statistics hard-coded in forward (F.batch_norm with training=True): the rows of a chunk are coupled."
    def __init__(self):
        super().__init__(); self.lin = nn.Linear(3, 4)
    def forward(self, x): return self.lin(F.batch_norm(x, None, None, training=True))


class Counter(nn.Module):
    "A forward that changes its own buffer."
    def __init__(self):
        super().__init__(); self.lin = nn.Linear(3, 4); self.register_buffer('calls', torch.zeros(()))
    def forward(self, x):
        self.calls += 1
        return self.lin(x)*self.calls


class Square(torch.autograd.Function):
    "x², with a differentiable backward."
    @staticmethod
    def forward(x): return x*x
    @staticmethod
    def setup_context(ctx, inputs, output): ctx.save_for_backward(inputs[0])
    @staticmethod
    def backward(ctx, g): x, = ctx.saved_tensors; return 2*x*g


class SquareOnce(torch.autograd.Function):
    "x², with a backward marked @once_differentiable (double backward impossible)."
    @staticmethod
    def forward(x): return x*x
    @staticmethod
    def setup_context(ctx, inputs, output): ctx.save_for_backward(inputs[0])
    @staticmethod
    @once_differentiable
    def backward(ctx, g): x, = ctx.saved_tensors; return 2*x*g


class SquareNet(nn.Module):
    def __init__(self, fn):
        super().__init__(); self.lin, self.fn = nn.Linear(3, 4), fn
    def forward(self, x): return self.fn.apply(self.lin(x))


# -- 1. hidden randomness or state -------------------------------------------------------------------------------
@pytest.mark.parametrize('model, culprit', [
    (LSTMHead().double().train(), "'lstm' (LSTM) is in train mode, where it applies dropout=0.5 between its layers"),
    (nn.Sequential(nn.Linear(3, 6), nn.RReLU(), nn.Linear(6, 4)).double().train(), "'1' (RReLU) is in train mode"),
    (nn.Sequential(nn.Linear(3, 6), nn.Dropout(0.2), nn.Linear(6, 4)).double().train(), "'1' (Dropout) is in train mode"),
    (nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6, track_running_stats=False), nn.Linear(6, 4)).double().eval(),
     "'1' (BatchNorm1d) normalises every chunk with that chunk's own batch statistics, in eval mode too"),
], ids=['lstm-dropout', 'rrelu', 'dropout', 'batchnorm-no-running-stats'])
def test_stateful_modules_are_named(model, culprit):
    X, Y = _data()
    X = X[:, None].expand(10, 2, 3).contiguous() if isinstance(model, LSTMHead) else X
    with pytest.raises(ValueError, match='model: submodule') as e: Risk(model, 'cross_entropy', X, Y)
    assert culprit in str(e.value)


def test_hard_coded_dropout_is_caught_by_the_probe():
    X, Y = _data()
    with pytest.raises(ValueError, match='evaluated twice on the same rows X\\[:4\\] it gives different outputs') as e:
        Risk(HardDropout().double().eval(), 'cross_entropy', X, Y)
    assert "'<root>' (HardDropout, eval mode)" in str(e.value) and 'F.dropout(x, training=True)' in str(e.value)


def test_batch_statistics_in_forward_are_caught_by_the_probe():
    X, Y = _data()
    with pytest.raises(ValueError, match='in two chunks \\(2 \\+ 2 rows\\) gives other outputs than in one') as e:
        Risk(FunctionalBatchNorm().double().eval(), 'cross_entropy', X, Y)
    assert 'FunctionalBatchNorm' in str(e.value)


def test_a_loss_that_couples_rows_is_refused():
    X, Y = _data()
    Yr = torch.randn(10, 4, dtype=D)
    coupled = lambda out, y: ((out - y)**2).sum(1)/((out - y)**2).sum(1).max()   # per-example shape, but normalised by the chunk
    with pytest.raises(ValueError, match='loss: on the same model output for X\\[:4\\]'):
        Risk(_mlp(), coupled, X, Yr)


def test_buffer_mutated_in_forward_is_refused_and_users_buffer_untouched():
    X, Y = _data()
    m = Counter().double().eval()
    with pytest.raises(ValueError, match="model: its forward changes the buffer 'calls' in place"):
        Risk(m, 'cross_entropy', X, Y)
    assert float(m.calls) == 0.   # the user's own buffer


def test_buffers_are_a_copy():
    "Changing the user's BatchNorm statistics after building the risk changes neither the risk nor is changed by it."
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 4)).double()
    net(torch.randn(50, 3, dtype=D)*2 + 1); net.eval()
    X, Y = _data()
    r = Risk(net, 'cross_entropy', X, Y, params=['3.weight'])
    v0, g0 = r.value(), r.grad()
    rm = net[1].running_mean.clone()
    with torch.no_grad():
        net[1].running_mean.add_(5.); net[3].bias.add_(1.)   # a buffer and a frozen (non-chosen) parameter
    assert torch.equal(r.value(), v0) and torch.equal(r.grad(), g0)
    with torch.no_grad(): net[1].running_mean.copy_(rm); net[3].bias.sub_(1.)
    with torch.no_grad(): ref = F.cross_entropy(net(X), Y)   # independent: the model itself, all rows at once
    torch.testing.assert_close(r.value(), ref, rtol=1e-14, atol=0)


def test_once_differentiable_is_refused():
    X, Y = _data()
    with pytest.raises(ValueError, match='model: the loss is not twice differentiable') as e:
        Risk(SquareNet(SquareOnce).double(), 'cross_entropy', X, Y)
    assert 'SquareOnce' in str(e.value) and '@once_differentiable' in str(e.value)


def test_differentiable_custom_function_gives_the_true_hessian():
    X, Y = _data()
    net = SquareNet(Square).double()
    r = Risk(net, 'cross_entropy', X, Y, batch_size=4)
    def R(w):   # the same function written with plain ops, differentiated by torch.autograd.functional
        W, b = w[:12].view(4, 3), w[12:]
        return F.cross_entropy((X @ W.T + b)**2, Y)
    H = torch.autograd.functional.hessian(R, r.w)
    V = torch.randn(r.p, 3, dtype=D, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(r.hvp(V), H @ V, rtol=1e-10, atol=1e-12)
    assert float((H @ V).abs().max()) > 1e-3


# -- 2. every row ------------------------------------------------------------------------------------------------
def _linear_nan_setup():
    "A linear model and a loss that is NaN at row 5 (sqrt of a negative target), with a finite gradient there."
    torch.manual_seed(0)
    m = nn.Linear(3, 1).double()
    X, _ = _data()
    Y = torch.rand(10, dtype=D); Y[5] = -1.
    loss = lambda out, y: (out[:, 0] - y)**2 + torch.sqrt(y)
    return m, loss, X, Y


@pytest.mark.parametrize('bs', [None, 4])
@pytest.mark.parametrize('call', ['value', 'grad', 'hvp', 'jx', 'jxT', 'grad_x'])
def test_nan_loss_after_the_probe_names_the_row(call, bs):
    m, loss, X, Y = _linear_nan_setup()
    r = Risk(m, loss, X, Y, batch_size=bs)   # rows 0..3 (the probe) are fine
    f = {'value': lambda: r.value(), 'grad': lambda: r.grad(), 'hvp': lambda: r.hvp(torch.ones(r.p, 2, dtype=D)),
         'jx': lambda: r.jx(torch.ones_like(X)), 'jxT': lambda: r.jxT(torch.ones(r.p, dtype=D)), 'grad_x': lambda: r.grad_x()}[call]
    with pytest.raises(ValueError, match=r'loss: is nan on row 5 \(X\[5\], Y\[5\]\)'): f()


@pytest.mark.parametrize('mode', Risk.MODES)
def test_nan_loss_named_in_a_data_source(mode):
    m, loss, X, Y = _linear_nan_setup()
    r = Risk(m, loss, DataLoader(TensorDataset(X, Y), batch_size=4), hvp_mode=mode)
    with pytest.raises(ValueError, match=r'loss: is nan on row 5 of data \(batch 1, row 1\)'): r.hvp(torch.ones(r.p, dtype=D))


def test_nan_gradient_with_finite_loss_names_the_row():
    torch.manual_seed(0)
    m = nn.Linear(3, 1).double()
    X, _ = _data()
    with torch.no_grad(): f = m(X)[:, 0]
    Y = f + 1.; Y[6] = f[6]   # |f - y| = sqrt((f - y)²) at f = y: loss 0, gradient 0·∞ = NaN
    r = Risk(m, lambda out, y: torch.sqrt((out[:, 0] - y)**2), X, Y)
    torch.testing.assert_close(r.value(), torch.tensor(0.9, dtype=D))   # nine rows at distance 1, one at 0
    with pytest.raises(ValueError, match=r'loss: its gradient is NaN/Inf on row 6 \(X\[6\], Y\[6\]\)'): r.grad()


def test_ignore_index_with_the_string_cross_entropy_is_refused():
    X, Y = _data(); Y[7] = -100
    with pytest.raises(ValueError, match=r"Y: row 7 has the class label -100, outside \[0, 4\).*'cross_entropy' has no ignore_index"):
        Risk(_mlp(), 'cross_entropy', X, Y)


def test_ignore_index_where_the_reduction_says_how_it_counts():
    X, Y = _data(); Y[7] = -100
    net = _mlp()
    with torch.no_grad(): out = net(X)
    rm = Risk(net, nn.CrossEntropyLoss(), X, Y, batch_size=4)      # torch's mean leaves row 7 out of n
    torch.testing.assert_close(rm.value(), F.cross_entropy(out[Y != -100], Y[Y != -100]), rtol=1e-14, atol=0)
    rs = Risk(net, nn.CrossEntropyLoss(reduction='sum'), X, Y)
    torch.testing.assert_close(rs.value(), F.cross_entropy(out[Y != -100], Y[Y != -100], reduction='sum'), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match=r"Y: row 7 has the label -100, CrossEntropyLoss's ignore_index, but with reduction='none'"):
        Risk(net, nn.CrossEntropyLoss(reduction='none'), X, Y)
    Y0 = Y.clone(); Y0[7] = 0   # an ignore_index inside [0, C) is refused with reduction='none' too
    with pytest.raises(ValueError, match=r"Y: row 1 has the label 0"):
        Risk(net, nn.CrossEntropyLoss(reduction='none', ignore_index=0), X, torch.tensor([1, 0] + [2]*8))


def test_out_of_range_labels_are_named_at_construction():
    X, Y = _data(); Y[8] = 4
    with pytest.raises(ValueError, match=r"Y: row 8 has the class label 4, outside \[0, 4\) for the model's 4 outputs"):
        Risk(_mlp(), 'cross_entropy', X, Y)
    with pytest.raises(ValueError, match=r"data: row 8 \(batch 2, row 0\) has the class label 4"):
        Risk(_mlp(), F.cross_entropy, DataLoader(TensorDataset(X, Y), batch_size=4))
    Y[8] = -3
    with pytest.raises(ValueError, match=r"Y: row 8 has the class label -3, outside \[0, 4\) for the model.s 4 outputs \(and not NLLLoss.s ignore_index=-100\)"):
        Risk(_mlp(), nn.NLLLoss(), X, Y)


def test_complex_targets_and_inputs_are_refused():
    X, Y = _data()
    Yc = torch.randn(10, 4, dtype=torch.complex128)
    with pytest.raises(TypeError, match='Y: complex targets'): Risk(_mlp(), 'mse', X, Yc)
    with pytest.raises(TypeError, match='data: complex targets'): Risk(_mlp(), 'mse', [(X, Yc)])
    with pytest.raises(TypeError, match='X: complex inputs'): Risk(_mlp(), 'mse', X.to(torch.complex128), Y)


def test_integer_targets_for_a_regression_loss_are_refused():
    X, Y = _data()
    with pytest.raises(TypeError, match="Y: 'mse' is a regression loss and needs real floating targets"):
        Risk(nn.Linear(3, 1).double(), 'mse', X, Y)
    with pytest.raises(TypeError, match="Y: MSELoss is a regression loss"):
        Risk(nn.Linear(3, 1).double(), nn.MSELoss(), X, Y[:, None])


def test_model_output_must_be_a_tensor():
    X, Y = _data()
    class Tup(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(3, 4)
        def forward(self, x): return self.lin(x), x
    class Dic(Tup):
        def forward(self, x): return {'logits': self.lin(x)}
    with pytest.raises(TypeError, match=r"model: returns a tuple, not a tensor.*return out\[0\]"):
        Risk(Tup().double(), 'cross_entropy', X, Y)
    with pytest.raises(TypeError, match=r"model: returns a dict, not a tensor.*return out\['logits'\]"):
        Risk(Dic().double(), 'cross_entropy', X, Y)


def test_X_requiring_grad_is_detached():
    X, Y = _data()
    Xg = X.clone().requires_grad_()
    net = _mlp()
    r = Risk(net, 'cross_entropy', Xg, Y, batch_size=4)
    V = torch.randn(r.p, 2, dtype=D, generator=torch.Generator().manual_seed(0))
    outs = [r.value(), r.grad(), r.hvp(V), r.jx(torch.ones(*X.shape, 2, dtype=D)), r.jxT(V), r.grad_x()]
    assert not r.X.requires_grad and all(not o.requires_grad and o.grad_fn is None for o in outs)
    assert Xg.grad is None
    ref = Risk(net, 'cross_entropy', X, Y, batch_size=4)
    for o, e in zip(outs, [ref.value(), ref.grad(), ref.hvp(V), ref.jx(torch.ones(*X.shape, 2, dtype=D)), ref.jxT(V), ref.grad_x()]):
        assert torch.equal(o, e)
    assert not r.at(X=Xg*1.).X.requires_grad


# -- the probe does not fire for sound models ---------------------------------------------------------------------
def _cnn(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(8*8*8, 10)).to(dtype)
    with torch.no_grad(): net(torch.randn(64, 3, 8, 8, dtype=dtype)*3 + 1)   # train-mode pass: non-trivial running statistics
    return net.eval()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('kind', ['mlp', 'cnn-batchnorm', 'lstm'])
def test_sound_models_in_eval_mode_pass(kind, dtype):
    g = torch.Generator().manual_seed(1)
    if kind == 'mlp': net, X = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 10)).to(dtype).eval(), torch.randn(32, 3, generator=g)
    elif kind == 'cnn-batchnorm': net, X = _cnn(dtype), torch.randn(32, 3, 8, 8, generator=g)
    else: net, X = LSTMHead(c=10, dropout=0.5).to(dtype).eval(), torch.randn(32, 7, 3, generator=g)
    X, Y = X.to(dtype), torch.randint(0, 10, (32,), generator=g)
    for bs in (None, 8):
        r = Risk(net, 'cross_entropy', X, Y, batch_size=bs)
        w = r.w.clone().requires_grad_()
        R = F.cross_entropy(torch.func.functional_call(net, r.unflatten(w), (X,)), Y)   # plain autograd, all rows at once
        gref, = torch.autograd.grad(R, w)
        rtol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(r.value(), R.detach(), rtol=rtol, atol=0)
        torch.testing.assert_close(r.grad(), gref, rtol=rtol, atol=rtol*float(gref.abs().max()))


class OrderBySize(nn.Module):
    """A linear layer whose sum runs in another order for 2 rows than for more (as a BLAS kernel may): the same function
    of (w, x), other rounding. `couple` > 0 adds a genuine coupling of the rows (their mean)."""
    def __init__(self, couple=0.):
        super().__init__()
        self.lin, self.couple = nn.Linear(3, 2), couple
    def forward(self, x):
        t = x[:, None, :]*self.lin.weight
        s = t.sum(-1) if x.shape[0] > 2 else t.flip(-1).sum(-1)
        return s + self.lin.bias + self.couple*x.mean(0).sum()


def _cancelling(couple=0.):
    "Weights of 1e8 that cancel to outputs of order 1 (x₂ ≈ x₁, x₃ ≈ x₁), as saturated units of an unregularised fit reach."
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(6, 1, generator=g, dtype=D)
    X = torch.cat([x1, x1 + 1e-8*torch.randn(6, 1, generator=g, dtype=D), x1 + 3e-8*torch.randn(6, 1, generator=g, dtype=D)], 1)
    m = OrderBySize(couple).double()
    with torch.no_grad():
        m.lin.weight.copy_(torch.tensor([[1e8, -1e8, 1.], [3e7, 1., -3e7]], dtype=D)); m.lin.bias.zero_()
    return m, X, torch.randn(6, 2, generator=g, dtype=D)


def test_rounding_amplified_by_cancelling_weights_is_not_batch_dependence():
    """Issue: a saturated tanh MLP (weights 5e8, outputs of order 1) was refused as 'batch statistics' on a machine whose
    BLAS picks another kernel for 2 rows than for 4. The probe's rounding scale now includes the output's sensitivity to a
    relative change of the weights (the backward error of W x), so such rounding passes and a real coupling does not."""
    m, X, Y = _cancelling()
    with torch.no_grad(): out, split = m(X[:4]), torch.cat([m(X[:2]), m(X[2:4])])
    assert float((split - out).abs().max()) > 1e4*torch.finfo(D).eps*float(out.abs().max())   # beyond the plain 4096 ulps
    Risk(m, 'mse', X, Y)                                                                     # accepted
    mc, X, Y = _cancelling(couple=1e-2)
    with pytest.raises(ValueError, match='in two chunks \\(2 \\+ 2 rows\\) gives other outputs than in one'):
        Risk(mc, 'mse', X, Y)
