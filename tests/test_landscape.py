"Tests for setsens.landscape: filter normalisation, loss surfaces, plane coordinates, plotting."
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from setsens.landscape import (filter_normalized_direction, loss_surface, plot_surface, plane_coordinates,
                               plane_from_shifts, model_loss_fn, flatten_params, unflatten_params)
from setsens.core import data_dir

DATA = data_dir(must_exist=False)
needs_data = pytest.mark.skipif(DATA is None or not (DATA/'resnet56-4bfd9763.th').is_file(),
                                reason='real data folder (../shared/data or SETSENS_DATA) not found')


class SmallNet(nn.Module):
    "conv (bias) → BN → relu → pool → linear (bias): every kind of parameter Li et al. distinguish."
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6*4*4, 10)
    def forward(self, x):
        x = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 4)
        return self.fc(x.flatten(1))


def _net(seed=0):
    torch.manual_seed(seed)
    net = SmallNet().double()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        net.bn.running_mean.uniform_(-.5, .5); net.bn.running_var.uniform_(.5, 2.)
        net.bn.weight.uniform_(.5, 1.5); net.bn.bias.uniform_(-.2, .2)
    return net.eval()


def _data(n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def test_filter_norms_equal_weight_norms_and_biasbn_zero():
    net = _net()
    d = filter_normalized_direction(net, generator=torch.Generator().manual_seed(0))
    for k, w in net.named_parameters():
        if w.dim() <= 1:
            assert torch.equal(d[k], torch.zeros_like(w)), k
            continue
        for j in range(w.shape[0]):  # explicit loop over output channels (filters)
            assert torch.isclose(d[k][j].norm(), w[j].norm(), rtol=1e-12), (k, j)
        # and the direction is not just the weights rescaled: it is random
        assert not torch.allclose(d[k]/d[k].norm(), w/w.norm(), atol=1e-3)
    assert d['conv.weight'].dtype == torch.float64


def test_ignore_none_copies_weights_on_1d_parameters():
    net = _net()
    d = filter_normalized_direction(net, torch.Generator().manual_seed(0), ignore=None)
    for k in ('conv.bias', 'bn.weight', 'bn.bias', 'fc.bias'):
        assert torch.equal(d[k], dict(net.named_parameters())[k].detach())
    d0 = filter_normalized_direction(net, torch.Generator().manual_seed(0))
    assert torch.equal(d['fc.weight'], d0['fc.weight'])
    with pytest.raises(ValueError, match='ignore'): filter_normalized_direction(net, ignore='bn')


def test_module_dict_flat_forms_agree_and_are_reproducible():
    net = _net()
    params = {k: p.detach() for k, p in net.named_parameters()}
    w = flatten_params(params)
    g = lambda: torch.Generator().manual_seed(3)
    a = filter_normalized_direction(net, g())
    b = filter_normalized_direction(params, g())
    c = filter_normalized_direction(w, g(), layout=net)
    shapes = {k: v.shape for k, v in params.items()}
    e = filter_normalized_direction(w, g(), layout=shapes)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(c, flatten_params(a)) and torch.equal(e, c)
    assert not torch.equal(filter_normalized_direction(net, torch.Generator().manual_seed(4))['fc.weight'], a['fc.weight'])
    with pytest.raises(ValueError, match='layout'): filter_normalized_direction(w)
    with pytest.raises(ValueError, match='needs'): unflatten_params(w[:-1], net)
    with pytest.raises(TypeError, match='model_or_params'): filter_normalized_direction([1., 2.])


@needs_data
def test_resnet56_filter_normalisation():
    from setsens.cifar import load_pretrained
    m = load_pretrained(dtype=torch.float64)
    d = filter_normalized_direction(m, torch.Generator().manual_seed(0))
    for k, w in m.named_parameters():
        if w.dim() == 1: assert d[k].abs().max() == 0; continue
        torch.testing.assert_close(d[k].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1), rtol=1e-12, atol=0)


def test_loss_surface_origin_equals_model_loss_and_batching():
    net = _net(); X, Y = _data()
    w0 = flatten_params({k: p.detach() for k, p in net.named_parameters()})
    g = torch.Generator().manual_seed(0)
    d1 = filter_normalized_direction(w0, g, layout=net); d2 = filter_normalized_direction(w0, g, layout=net)
    f = model_loss_fn(net)
    alphas, betas = torch.tensor([-0.3, 0., 0.4]), torch.tensor([0., 0.25])
    grid = loss_surface(f, w0, d1, d2, alphas, betas, X=X, Y=Y, batch_size=7, progress=False)
    assert grid.shape == (3, 2) and grid.dtype == torch.float64
    with torch.no_grad(): direct = F.cross_entropy(net(X), Y)
    torch.testing.assert_close(grid[1, 0], direct, rtol=1e-12, atol=0)
    # every grid point against an independent evaluation: load the weights into a copy of the net
    for i, a in enumerate(alphas.tolist()):
        for j, b in enumerate(betas.tolist()):
            other = _net()
            with torch.no_grad():
                for (k, p), v in zip(other.named_parameters(), unflatten_params(w0 + a*d1 + b*d2, net).values()): p.copy_(v)
                torch.testing.assert_close(grid[i, j], F.cross_entropy(other(X), Y), rtol=1e-12, atol=0)
    # independent of the batch size, and the same with dict weights
    grid2 = loss_surface(f, w0, d1, d2, alphas, betas, X=X, Y=Y, batch_size=None, progress=False)
    torch.testing.assert_close(grid, grid2, rtol=1e-12, atol=0)
    u = lambda v: unflatten_params(v, net)
    grid3 = loss_surface(f, u(w0), u(d1), u(d2), alphas, betas, X=X, Y=Y, batch_size=4, progress=False)
    torch.testing.assert_close(grid, grid3, rtol=1e-12, atol=0)
    # ignored BN/bias entries really stay fixed along the directions
    assert d1[w0.numel() - 10:].abs().max() == 0  # fc.bias is last


@needs_data
def test_loss_surface_origin_resnet56():
    from setsens.cifar import load_pretrained, cifar10
    m = load_pretrained(); X, Y = cifar10(n=6)
    w0 = flatten_params({k: p.detach() for k, p in m.named_parameters()})
    d1 = filter_normalized_direction(w0, torch.Generator().manual_seed(0), layout=m)
    grid = loss_surface(model_loss_fn(m), w0, d1, d1.flip(0), [0.], [0.], X=X, Y=Y, batch_size=4, progress=False)
    with torch.no_grad(): direct = F.cross_entropy(m(X), Y)
    torch.testing.assert_close(grid[0, 0], direct, rtol=1e-5, atol=1e-9)


def test_loss_surface_quadratic_closed_form():
    "Linear least squares: the surface is an exact quadratic in (α, β)."
    g = torch.Generator().manual_seed(0)
    n, d, k = 12, 30, 3
    X = torch.randn(n, d, generator=g, dtype=torch.float64); Y = torch.randn(n, k, generator=g, dtype=torch.float64)
    lin = nn.Linear(d, k, bias=False).double()
    w0, d1, d2 = (torch.randn(d*k, generator=g, dtype=torch.float64) for _ in range(3))
    al, be = torch.linspace(-1, 1, 5), torch.linspace(-2, 2, 4)
    grid = loss_surface(model_loss_fn(lin, 'mse'), w0, d1, d2, al, be, X=X, Y=Y, batch_size=5, progress=False)
    for i, a in enumerate(al.tolist()):
        for j, b in enumerate(be.tolist()):
            W = (w0 + a*d1 + b*d2).reshape(k, d)
            torch.testing.assert_close(grid[i, j], 0.5*((X @ W.T - Y)**2).sum()/n, rtol=1e-12, atol=0)


def test_loss_surface_with_risk_like_and_plain_callable():
    class FakeRisk:  # the duck type of setsens.risk.Risk used here: .at(w=...) and .value()
        def __init__(self, w=None): self.w = w
        def at(self, w=None): return FakeRisk(w)
        def value(self): return (self.w**2).sum()
    w0, d1, d2 = torch.tensor([1., 0., 0.]), torch.tensor([0., 1., 0.]), torch.tensor([0., 0., 1.])
    grid = loss_surface(FakeRisk(), w0, d1, d2, [0., 1.], [2.], progress=False)
    torch.testing.assert_close(grid, torch.tensor([[5.], [6.]]))
    grid2 = loss_surface(lambda w: (w**2).sum(), w0, d1, d2, [0., 1.], [2.], progress=False)
    torch.testing.assert_close(grid, grid2)
    with pytest.raises(ValueError, match='X, Y'): loss_surface(FakeRisk(), w0, d1, d2, [0.], [0.], X=torch.ones(2, 3))
    with pytest.raises(ValueError, match='w0, d1, d2'): loss_surface(FakeRisk(), w0, d1[:2], d2[:2], [0.], [0.])
    with pytest.raises(ValueError, match='alphas'): loss_surface(FakeRisk(), w0, d1, d2, [float('nan')], [0.])
    with pytest.raises(TypeError, match='loss_fn_or_risk'): loss_surface(3, w0, d1, d2, [0.], [0.])


def test_loss_surface_with_setsens_risk():
    risk_mod = pytest.importorskip('setsens.risk')
    net = _net(); X, Y = _data(8)
    try: risk = risk_mod.Risk(net, 'cross_entropy', X, Y)
    except Exception as e: pytest.skip(f'setsens.risk.Risk not usable yet: {e}')
    d1 = filter_normalized_direction(risk.w, torch.Generator().manual_seed(0), layout=net)
    grid = loss_surface(risk, risk.w, d1, d1.flip(0), [0., 0.5], [0.], progress=False)
    f = model_loss_fn(net)
    torch.testing.assert_close(grid[1, 0], f(risk.w + 0.5*d1, X, Y), rtol=1e-10, atol=1e-12)


def test_model_loss_fn_checks():
    net = _net(); X, Y = _data(4)
    net.train()
    with pytest.raises(ValueError, match='eval'): model_loss_fn(net)
    net.eval()
    with pytest.raises(ValueError, match='loss'): model_loss_fn(net, 'hinge')
    f = model_loss_fn(net, lambda out, y: out.sum())  # not per-example
    w = flatten_params(dict(net.named_parameters()))
    with pytest.raises(ValueError, match='per-example'): f(w, X, Y)


def test_model_loss_fn_follows_risk_policy_and_losses():
    "The eval-mode policy and the losses are Risk's: Dropout2d and RReLU in train mode are refused too (the old check "
    "knew only BatchNorm and nn.Dropout), 'mse' with (n,) targets on (n, 1) outputs is ½Σ(f − y)² (no broadcast to n×n)."
    for bad in (nn.Dropout2d(0.5), nn.RReLU()):
        net = nn.Sequential(nn.Linear(2, 2), bad).double().train()
        with pytest.raises(ValueError, match=r'call model\.eval\(\) first'): model_loss_fn(net)
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(3, 1).double()
    X, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    w = flatten_params(dict(lin.named_parameters()))
    with torch.no_grad(): by_hand = 0.5*((lin(X)[:, 0] - y)**2).mean()
    torch.testing.assert_close(model_loss_fn(lin, 'mse')(w, X, y), by_hand, rtol=1e-14, atol=0)


def test_unflatten_params_with_a_risk_layout():
    risk_mod = pytest.importorskip('setsens.risk')
    net = _net(); X, Y = _data(4)
    risk = risk_mod.Risk(net, 'cross_entropy', X, Y)
    v = torch.arange(risk.p, dtype=risk.w.dtype)
    d = unflatten_params(v, risk)
    assert list(d) == risk.names and all(d[k].shape == p.shape for k, p in net.named_parameters())
    assert torch.equal(flatten_params(d), v)
    with pytest.raises(ValueError, match='w: has 3 entries'): unflatten_params(v[:3], risk)


def test_plane_coordinates_round_trip_and_lstsq_oracle():
    g = torch.Generator().manual_seed(0)
    p = 200
    a, b = torch.randn(p, generator=g, dtype=torch.float64), torch.randn(p, generator=g, dtype=torch.float64)
    d1, d2 = plane_from_shifts([a, b])
    assert abs(float(d1 @ d2)) < 1e-10*float(d1.norm()*d2.norm()) and torch.isclose(d1.norm(), d2.norm())
    torch.testing.assert_close(plane_coordinates(a, d1, d2), torch.tensor([1., 0.], dtype=torch.float64), rtol=0, atol=1e-12)
    w0 = torch.randn(p, generator=g, dtype=torch.float64)
    C = torch.randn(9, 2, generator=g, dtype=torch.float64)
    pts = w0 + C @ torch.stack([d1, d2])
    ab, res = plane_coordinates(pts, d1, d2, origin=w0, return_residual=True)
    torch.testing.assert_close(ab, C, rtol=0, atol=1e-10)
    assert res.abs().max() < 1e-10
    # non-orthogonal directions, point off the plane: least squares (torch.linalg.lstsq as oracle)
    e1, e2 = a, a + 0.1*b
    q = torch.randn(p, generator=g, dtype=torch.float64)
    ab, r = plane_coordinates(q, e1, e2, return_residual=True)
    A = torch.stack([e1, e2], 1)
    sol = torch.linalg.lstsq(A, q[:, None]).solution[:, 0]
    torch.testing.assert_close(ab, sol, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(r, (q - A @ sol).norm(), rtol=1e-9, atol=1e-12)
    # dict points and a list of points
    lay = {'x': (p // 2,), 'y': (p // 2,)}
    torch.testing.assert_close(plane_coordinates(unflatten_params(a, lay), d1, d2), plane_coordinates(a, d1, d2))
    torch.testing.assert_close(plane_coordinates([a, b], d1, d2), plane_coordinates(torch.stack([a, b]), d1, d2))
    with pytest.raises(ValueError, match='parallel'): plane_coordinates(q, a, 2*a)
    with pytest.raises(ValueError, match='differ'): plane_coordinates(q[:-1], d1, d2)


def test_plane_from_many_shifts_is_best_fit_plane():
    g = torch.Generator().manual_seed(1)
    p, k = 100, 6
    B = torch.linalg.qr(torch.randn(p, 2, generator=g, dtype=torch.float64))[0]
    S = torch.randn(k, 2, generator=g, dtype=torch.float64) @ B.T + 1e-3*torch.randn(k, p, generator=g, dtype=torch.float64)
    d1, d2 = plane_from_shifts(S)
    assert abs(float(d1 @ d2)) < 1e-10
    _, res = plane_coordinates(S, d1, d2, return_residual=True)
    # the best plane leaves less residual than the true plane B (which is one candidate)
    res_true = (S - (S @ B) @ B.T).norm(dim=1)
    assert float((res**2).sum()) <= float((res_true**2).sum()) + 1e-12
    torch.testing.assert_close(d1.norm()**2, (S**2).sum(1).mean())
    assert float(S.mean(0) @ d1) > 0 and float(S.mean(0) @ d2) >= 0
    with pytest.raises(ValueError, match='parallel'): plane_from_shifts(torch.outer(torch.arange(1., 4.), S[0]))
    with pytest.raises(ValueError, match='zero'): plane_from_shifts([torch.zeros(p, dtype=torch.float64), S[0]])


def test_plot_surface_writes_png(tmp_path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    al, be = torch.linspace(-1, 1, 6), torch.linspace(-1, 2, 5)
    A, B = torch.meshgrid(al, be, indexing='ij')
    grid = (A - 0.3)**2 + 0.1*B**2 + 1e-3
    out = tmp_path/'fig4.png'
    fig = plot_surface(al, be, grid, points=[[0.5, 0.5], [0.9, -0.5]], labels=['a', 'b'], out=out, log=True, title='t')
    assert out.is_file() and out.read_bytes()[:4] == b'\x89PNG'
    assert len(fig.axes) == 3  # 3D surface, contours, colour bar
    plt.close(fig)
    with pytest.raises(ValueError, match='grid'): plot_surface(al, be, grid.T)
    with pytest.raises(ValueError, match='labels'): plot_surface(al, be, grid, points=[[0., 0.]], labels=['a', 'b'])
    with pytest.raises(ValueError, match='increasing'): plot_surface(al.flip(0), be, grid)
