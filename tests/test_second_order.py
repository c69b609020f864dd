"""Issue 17: `setsens.second_order.FastSecondOrder` (chapter 06a) changes how a gradient graph is recorded, never what it
computes. Float64 oracles: second derivatives (reverse over reverse, forward over reverse, mixed in (w, x)) of models
with 1-, 2- and 3-D convolutions, strides, dilation, groups, biases and BatchNorm, inside the mode against outside it
(PyTorch's own kernels), and the cases the mode must leave alone."""
import copy, pytest, torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev, vjp, vmap
from setsens.second_order import FastSecondOrder
from setsens.risk import Risk

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def _bn(c, d):
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[d](c)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1); bn.running_var.uniform_(0.5, 2); bn.weight.uniform_(0.5, 2); bn.bias.uniform_(-1, 1)
    return bn


def _model(d, device):
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[d]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(d)
        m = nn.Sequential(conv(2, 4, 3, padding=1, bias=True), _bn(4, d), nn.Softplus(),
                          conv(4, 4, 2, stride=2, dilation=1, groups=2, bias=False), _bn(4, d), nn.Tanh(),
                          conv(4, 3, 1), nn.Flatten(), nn.LazyLinear(3))
        shape = {1: (5, 2, 8), 2: (5, 2, 6, 6), 3: (5, 2, 4, 4, 4)}[d]
        X = torch.randn(shape, dtype=torch.float64)
        m = m.double(); m(X)
    return m.to(device).eval(), X.to(device), torch.tensor([0, 1, 2, 0, 1], device=device)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('d', [1, 2, 3])
def test_second_derivatives_unchanged(d, device):
    m, X, Y = _model(d, device)
    P = {k: v.detach() for k, v in m.named_parameters()}
    f = lambda P, X: F.cross_entropy(functional_call(m, P, (X,)), Y)
    flat = lambda H: torch.cat([torch.cat([H[a][b].reshape(P[a].numel(), -1) for b in P], 1) for a in P])
    H = flat(hessian(f)(P, X))                                       # forward over reverse, PyTorch's kernels
    with FastSecondOrder():
        test_out = functional_call(m, P, (X,))
        H_fast = flat(hessian(f)(P, X))                              # forward over reverse through the mode's jvp rules
        _, back = vjp(lambda P: grad(f)(P, X), P)                    # reverse over reverse, recorded under the mode
        Jm = jacrev(lambda X_: grad(f)(P, X_))(X)                    # mixed ∂²/∂w∂x
    torch.testing.assert_close(test_out, m(X), rtol=0, atol=1e-12)
    torch.testing.assert_close(H_fast, H, rtol=0, atol=1e-11*H.abs().max().item())
    V = torch.randn(H.shape[0], 3, dtype=torch.float64, device=device)
    sizes = [p.numel() for p in P.values()]
    as_dict = lambda v: {k: t.view_as(P[k]) for k, t in zip(P, v.split(sizes))}
    cols = vmap(lambda v: torch.cat([t.reshape(-1) for t in back(as_dict(v))[0].values()]))(V.T).T
    torch.testing.assert_close(cols, H @ V, rtol=0, atol=1e-11*(H @ V).abs().max().item())
    Jref = jacrev(lambda X_: grad(f)(P, X_))(X)
    for k in P: torch.testing.assert_close(Jm[k], Jref[k], rtol=0, atol=1e-12*max(1.0, Jref[k].abs().max().item()))


def test_risk_products_match_pytorch_double_backward_on_a_batchnorm_convnet():
    m, X, Y = _model(2, 'cpu')
    r = Risk(m, 'cross_entropy', X, Y, batch_size=2)
    V = torch.randn(r.p, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    H = hessian(lambda w: F.cross_entropy(functional_call(m, r.unflatten(w), (X,)), Y))(r.w)
    with r.reusing(): inside = r.hvp(V)
    torch.testing.assert_close(r.hvp(V), H @ V, rtol=0, atol=1e-12*(H @ V).abs().max().item())
    torch.testing.assert_close(inside, H @ V, rtol=0, atol=1e-12*(H @ V).abs().max().item())


def test_cases_left_alone():
    "padding='same', unbatched inputs, an in-place change between a convolution and its BatchNorm, training mode."
    torch.manual_seed(0)
    c = nn.Conv2d(2, 3, 3, padding=1).double(); bn = _bn(3, 2).double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    with FastSecondOrder():
        same = F.conv2d(x, c.weight, c.bias, padding='same')
        unb = c(x[0])
        y = c(x); y.mul_(2); folded_after_inplace = bn(y)
        bn_tr = copy.deepcopy(bn).train(); tr = bn_tr(c(x))             # a copy: training mode updates the running statistics
    torch.testing.assert_close(same, F.conv2d(x, c.weight, c.bias, padding=1), rtol=0, atol=1e-13)
    torch.testing.assert_close(unb, c(x[0]), rtol=0, atol=1e-13)
    torch.testing.assert_close(folded_after_inplace, bn(2*c(x)), rtol=0, atol=1e-12)
    assert (tr.mean((0, 2, 3)) - bn_tr.bias).abs().max() < 1e-12       # batch statistics: the channel means are β
    assert same.grad_fn is not None and 'Convolution' in type(same.grad_fn).__name__   # PyTorch's own node, not routed
