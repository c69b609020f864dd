"Float64 oracles, scaling laws and bad input for setsens.dfcnn and setsens.dfcnn_checks (paper 1, eq. 8, Theorems 2-3)."
import math, warnings
import pytest
import torch
from torch import nn
from setsens.dfcnn import DFCNN, fit_zero_loss, trained_dfcnn, layer_gram, layer_lipschitz_modulus, theorem2_kappa
from setsens.dfcnn_checks import (dense_layer_blocks, exact_layer_modulus, check_assumption2, inclusion_check,
                                  layer_jacobian)
from setsens.graphical import lipschitz_modulus

f64 = torch.float64


def _net(d=3, m=6, H=3, n=5, seed=0):
    "A DFCNN fitted to zero loss on n random points (every point then reaches the output)."
    net, X, y, info = trained_dfcnn(d, m, H, n, seed=seed)
    assert info.converged
    return net, X, y


def _oracle_blocks(net, X, y, ks, h):
    "A = ∇²_{w^(h)} R and B = ∇_{x_K}∇_{w^(h)} R with torch.autograd.functional (independent of torch.func)."
    W0 = net.weights()[h-1].detach()
    def risk(w, XK):
        Xf = X.clone()
        Xf = torch.cat([XK[ks.index(i)][None] if i in ks else X[i][None] for i in range(X.shape[0])])
        x = Xf
        for j, W in enumerate(net.weights(), 1):
            x = torch.relu(x @ (w.view_as(W0) if j == h else W.detach()).T)
        return 0.5*((x @ net.a - y)**2).mean()
    w, XK = W0.reshape(-1).clone(), X[ks].clone()
    A = torch.autograd.functional.hessian(lambda w: risk(w, XK), w)
    gw = lambda XK: torch.autograd.grad(risk(w.requires_grad_(), XK), w, create_graph=True)[0]
    B = torch.autograd.functional.jacobian(gw, XK).reshape(w.numel(), -1)
    return A, B


def _pinv_modulus(A, B):
    "‖A†B‖₂ if range B ⊆ range A, else inf (the Mordukhovich criterion for symmetric A)."
    X = torch.linalg.pinv(A, hermitian=True, rtol=1e-10) @ B
    if (A @ X - B).norm() > 1e-8*max(B.norm(), 1e-300): return math.inf
    return float(torch.linalg.matrix_norm(X, 2))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_closed_form_equals_exact_modulus(seed):
    net, X, y = _net(seed=seed)
    K = layer_gram(net, X)
    kap = layer_lipschitz_modulus(net, X, None, None, y, joint=False)        # (H, n)
    kj = layer_lipschitz_modulus(net, X, None, None, y)                      # (H,)
    for h in (1, 2, 3):
        if torch.linalg.matrix_rank(K[h-1], hermitian=True) < X.shape[0]: continue   # generic case only here
        for k in (0, 3):
            A, B = _oracle_blocks(net, X, y, [k], h)
            ex = _pinv_modulus(A, B)
            assert 0 < ex < math.inf
            assert float(kap[h-1, k]) == pytest.approx(ex, rel=1e-7, abs=1e-12)
            assert exact_layer_modulus(net, X, y, k, h) == pytest.approx(ex, rel=1e-7, abs=1e-12)
        A, B = _oracle_blocks(net, X, y, list(range(X.shape[0])), h)
        assert float(kj[h-1]) == pytest.approx(_pinv_modulus(A, B), rel=1e-7)
        assert float(kj[h-1]) == pytest.approx(lipschitz_modulus(A, B), rel=1e-7)


def test_dense_blocks_match_autograd_functional():
    net, X, y = _net(seed=4)
    for h, ks in ((1, [2]), (3, [0, 4])):
        A, B = dense_layer_blocks(net, X, y, ks, h)
        A0, B0 = _oracle_blocks(net, X, y, ks, h)
        torch.testing.assert_close(A, A0, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(B, B0, rtol=1e-10, atol=1e-12)
        J = layer_jacobian(net, X, h)                                          # Gauss–Newton structure at zero loss
        torch.testing.assert_close(A, J.T @ J / X.shape[0], rtol=1e-10, atol=1e-12)


def test_theorem2_exact_for_one_point_lower_bound_for_many():
    net, X, y = _net(seed=5, n=4)
    for h in (1, 2, 3):
        t1 = float(theorem2_kappa(net, X[:1], 0, h))
        A, B = _oracle_blocks(net, X[:1], y[:1], [0], h)
        assert t1 == pytest.approx(_pinv_modulus(A, B), rel=1e-8)
    K = layer_gram(net, X, 1)
    assert torch.linalg.matrix_rank(K, hermitian=True) == X.shape[0]
    t = theorem2_kappa(net, X, None, 1); kap = layer_lipschitz_modulus(net, X, None, 1, joint=False)
    assert bool((t <= kap*(1 + 1e-12)).all()) and bool((t < kap*(1 - 1e-6)).any())
    # two points: the shortfall is sin θ between the two layer gradients
    K2 = layer_gram(net, X[:2], 1)
    sin = math.sqrt(1 - float(K2[0, 1])**2/float(K2[0, 0]*K2[1, 1]))
    assert float(theorem2_kappa(net, X[:2], 0, 1)/layer_lipschitz_modulus(net, X[:2], 0, 1)) == pytest.approx(sin, rel=1e-9)


def test_joint_modulus_bounds():
    net, X, y = _net(seed=6, n=5)
    kap = layer_lipschitz_modulus(net, X, None, None, joint=False)
    kj = layer_lipschitz_modulus(net, X, None, None)
    assert bool((kap.amax(1) <= kj*(1 + 1e-12)).all()) and bool((kj <= kap.norm(dim=1)*(1 + 1e-12)).all())
    sub = layer_lipschitz_modulus(net, X, [1, 3], 2)
    A, B = _oracle_blocks(net, X, y, [1, 3], 2)
    assert float(sub) == pytest.approx(_pinv_modulus(A, B), rel=1e-7)


def _scaled(net, alpha=1., beta=None):
    import copy
    m2 = copy.deepcopy(net)
    with torch.no_grad():
        m2.a.mul_(alpha)
        for h, b in (beta or {}).items(): m2.weights()[h-1].mul_(b)
    return m2


@pytest.mark.parametrize('alpha,beta,gamma', [(3., {}, 1.), (0.2, {2: 2.5}, 1.), (1., {1: 0.5, 3: 4.}, 1.), (1., {}, 3.)])
def test_scaling_power_law(alpha, beta, gamma):
    # derived: κ_h ∝ α⁰ · β_h¹ · Π_{j≠h} β_j⁰ · γ⁻¹ (ReLU positive homogeneity, patterns unchanged)
    net, X, y = _net(seed=7, n=4)
    m2 = _scaled(net, alpha, beta)
    X2 = gamma*X
    y2 = m2(X2).detach()
    for h in (1, 2, 3):
        expect = beta.get(h, 1.)/gamma
        ex0 = _pinv_modulus(*_oracle_blocks(net, X, y, [1], h))
        ex1 = _pinv_modulus(*_oracle_blocks(m2, X2, y2, [1], h))
        assert ex1/ex0 == pytest.approx(expect, rel=1e-7)
        assert float(layer_lipschitz_modulus(m2, X2, 1, h)/layer_lipschitz_modulus(net, X, 1, h)) == pytest.approx(expect, rel=1e-10)
        assert float(theorem2_kappa(m2, X2, 1, h)/theorem2_kappa(net, X, 1, h)) == pytest.approx(expect, rel=1e-10)


def test_rebalancing_keeps_function_but_scales_kappa():
    net, X, y = _net(seed=8)
    m2 = _scaled(net, 1., {2: 5., 3: 0.2})
    torch.testing.assert_close(m2(X), net(X), rtol=1e-12, atol=1e-12)
    r = layer_lipschitz_modulus(m2, X, 0, None)/layer_lipschitz_modulus(net, X, 0, None)
    torch.testing.assert_close(r, torch.tensor([1., 5., 0.2], dtype=f64), rtol=1e-10, atol=0)


def test_duplicated_point_is_not_lipschitz_like():
    net, X, y = _net(d=3, m=6, H=2, n=4, seed=9)
    t = theorem2_kappa(net, X, None, 1)
    j = int(torch.nonzero(torch.isfinite(t) & (t > 0))[0])          # a point that layer 1 does not ignore
    X = torch.cat([X[j:j+1], X[:j], X[j+1:]]); y = net(X).detach()
    Xd, yd = torch.cat([X[:1], X]), torch.cat([y[:1], y])
    assert math.isinf(float(layer_lipschitz_modulus(net, Xd, 0, 1)))
    assert math.isinf(float(layer_lipschitz_modulus(net, Xd, [0, 3], 1)))
    assert math.isfinite(float(layer_lipschitz_modulus(net, Xd, 3, 1)))            # other points are unaffected
    assert math.isfinite(exact_layer_modulus(net, Xd, yd, 0, 1))                   # the dense criterion does not see it


def test_persistent_rank_deficiency_is_finite_and_exact():
    # H=2, and layer 1 with a single active unit for points 0 and 1: layer 2 sees them as multiples of one vector
    g = torch.Generator().manual_seed(10)
    net = DFCNN(2, 4, 2, generator=g, dtype=f64)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1., 0.], [-1., 0.2], [-1., -0.3], [0.1, 1.]], dtype=f64))
    X = torch.tensor([[1., -0.2], [2., -0.3], [-1., 0.3], [0.3, 1.], [-0.5, -2.]], dtype=f64)
    y = net(X).detach()
    act = (X[:2] @ net.layers[0].weight.T > 0)
    assert act.sum(1).tolist() == [1, 1] and bool((act[0] == act[1]).all())
    K = layer_gram(net, X, 2)
    assert int(torch.linalg.matrix_rank(K, hermitian=True)) < X.shape[0]
    for k in (0, 1):
        cf = float(layer_lipschitz_modulus(net, X, k, 2))
        assert math.isfinite(cf)
        assert cf == pytest.approx(_pinv_modulus(*_oracle_blocks(net, X, y, [k], 2)), rel=1e-7)


def test_dead_point_zero_and_theorem2_zero():
    "A dead point (every unit off): both derivatives vanish, the exact modulus is 0, and Theorem 2's 0/0 is documented as 0 (never NaN)."
    g = torch.Generator().manual_seed(11)
    net = DFCNN(2, 4, 2, generator=g, dtype=f64)
    with torch.no_grad(): net.layers[0].weight[:, 0].abs_()
    X = torch.cat([torch.randn(3, 2, generator=g, dtype=f64).abs(), torch.tensor([[-1., 0.]], dtype=f64)])
    y = net(X).detach()
    assert float(layer_lipschitz_modulus(net, X, 3, 1)) == 0.
    assert exact_layer_modulus(net, X, y, 3, 1) == 0.
    assert float(theorem2_kappa(net, X, 3, 1)) == 0.


def test_fit_zero_loss_and_assumption2_fails():
    net, X, y, info = trained_dfcnn(3, 6, 2, 6, seed=0)
    assert info.converged and info.max_residual < 1e-12
    a2 = check_assumption2(net, X, y, 0)
    p = sum(W.numel() for W in net.weights())
    assert a2.rows == p and a2.rank <= X.shape[0] < p and not a2.satisfied
    assert a2.gram_rank == X.shape[0]
    a2h = check_assumption2(net, X, y, 0, h=2)
    assert a2h.rows == 36 and a2h.rank == X.shape[0]


def test_nonzero_residual_warns_and_dense_is_infinite():
    net, X, y = _net(seed=12)
    y_off = y + 0.3
    with pytest.warns(RuntimeWarning, match='does not interpolate'):
        layer_lipschitz_modulus(net, X, 0, 2, y_off)
    assert math.isinf(exact_layer_modulus(net, X, y_off, 0, 2))


def test_inclusion_worst_direction_attains_kappa():
    net, X, y, _ = trained_dfcnn(3, 6, 2, 5, seed=1)
    rows = inclusion_check(net, X, y, 0, 2, sizes=(1e-4,), n_samples=4)
    worst = [r for r in rows if r.direction == 'worst'][0]
    assert worst.patterns_kept
    assert worst.at_wbar == pytest.approx(worst.kappa, rel=1e-2)
    assert max(r.new_to_old for r in rows) <= worst.kappa*1.02


def test_dtype_follows_input():
    g = torch.Generator().manual_seed(0)
    net = DFCNN(3, 5, 2, generator=g, dtype=torch.float32)
    X = torch.randn(4, 3, generator=g)
    assert layer_lipschitz_modulus(net, X, 0, None).dtype == torch.float32
    assert theorem2_kappa(net, X, None, 2).shape == (4,)
    assert layer_lipschitz_modulus(net, X, None, 2, joint=False).shape == (4,)
    assert layer_lipschitz_modulus(net, X, [0, 2], [1, 2]).shape == (2,)


# ---------------------------------------------------------------- bad input
def test_bad_model():
    net, X, y = _net()
    with_bias = DFCNN(3, 6, 3, dtype=f64)
    with_bias.layers[1].bias = nn.Parameter(torch.zeros(6, dtype=f64))
    for fn in (layer_lipschitz_modulus, theorem2_kappa):
        with pytest.raises(ValueError, match=r'^model: layer 2 has a bias'): fn(with_bias, X, 0, 1)
    tanh = DFCNN(3, 6, 3, dtype=f64); tanh.activation = nn.Tanh()
    with pytest.raises(ValueError, match=r'^model: activation is Tanh'): layer_lipschitz_modulus(tanh, X, 0, 1)
    with pytest.raises(ValueError, match=r'^model: activation is LeakyReLU'):
        m = DFCNN(3, 6, 3, dtype=f64); m.activation = nn.LeakyReLU(); check_assumption2(m, X, y, 0)
    seq = nn.Sequential(nn.Linear(3, 6, bias=False), nn.ReLU(), nn.Linear(6, 1, bias=False)).double()
    with pytest.raises(ValueError, match=r'^model: expected a DFCNN'): layer_lipschitz_modulus(seq, X, 0, 1)
    extra = DFCNN(3, 6, 3, dtype=f64); extra.scale = nn.Parameter(torch.ones(1, dtype=f64))
    with pytest.raises(ValueError, match=r'^model: unexpected parameters'): layer_gram(extra, X)
    with pytest.raises(ValueError, match=r'^model: module 0 \(Linear\) has a bias'):
        DFCNN.from_sequential(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1, bias=False)))
    with pytest.raises(ValueError, match=r'^model: module 1 is Sigmoid'):
        DFCNN.from_sequential(nn.Sequential(nn.Linear(3, 6, bias=False), nn.Sigmoid(), nn.Linear(6, 1, bias=False)))
    for bad in (dict(d=0, m=3, depth=2), dict(d=2, m=3, depth=0), dict(d=2, m=2.5, depth=1)):
        with pytest.raises(ValueError, match=r'^(d|m|depth):'): DFCNN(**bad)


@pytest.mark.parametrize('h', [0, 4, -1, 1.0, True, [1, 5], []])
def test_bad_h(h):
    net, X, y = _net()
    with pytest.raises(ValueError, match=r'^h:'): layer_lipschitz_modulus(net, X, 0, h)
    if not isinstance(h, list):
        with pytest.raises(ValueError, match=r'^h:'): theorem2_kappa(net, X, 0, h)
        with pytest.raises(ValueError, match=r'^h:'): exact_layer_modulus(net, X, y, 0, h)


@pytest.mark.parametrize('k', [5, -1, 2.0, True, [0, 5], [], [1, 1]])
def test_bad_k(k):
    net, X, y = _net()
    with pytest.raises(ValueError, match=r'^k:'): layer_lipschitz_modulus(net, X, k, 1)
    with pytest.raises(ValueError, match=r'^k:'): theorem2_kappa(net, X, k, 1)
    with pytest.raises(ValueError, match=r'^k:'): dense_layer_blocks(net, X, y, k, 1)


def test_bad_data():
    net, X, y = _net()
    with pytest.raises(ValueError, match=r'^X:'): layer_lipschitz_modulus(net, X[:, :2], 0, 1)
    with pytest.raises(ValueError, match=r'^X:'): layer_lipschitz_modulus(net, X[0], 0, 1)
    with pytest.raises(ValueError, match=r'^X, model:'): layer_lipschitz_modulus(net, X.float(), 0, 1)
    with pytest.raises(ValueError, match=r'^X:'): layer_lipschitz_modulus(net, X*float('nan'), 0, 1)
    with pytest.raises(ValueError, match=r'^y:'): layer_lipschitz_modulus(net, X, 0, 1, y[:3])
    with pytest.raises(ValueError, match=r'^y:'): fit_zero_loss(net, X, y[:, None])


def test_dfcnn_study_moved_with_alias():
    "Issue 14: the study (tables, figures, Result rows) lives in setsens.dfcnn_study; the old import warns."
    import setsens.dfcnn, setsens.dfcnn_study
    with pytest.warns(DeprecationWarning, match='setsens.dfcnn.dfcnn_study has moved: import it from setsens.dfcnn_study'):
        f = setsens.dfcnn.dfcnn_study
    assert f is setsens.dfcnn_study.dfcnn_study
    assert not any(n in vars(setsens.dfcnn) for n in ('Result', '_compare', '_table', '_plot_kappa', '_plot_inclusion'))
    with pytest.raises(AttributeError): setsens.dfcnn._compare


CHECKS_MOVED = ['layer_jacobian', 'project_layer', 'dense_layer_blocks', 'exact_layer_modulus', 'Assumption2Check',
                'check_assumption2', 'solution_set', 'InclusionRow', 'inclusion_check']

@pytest.mark.parametrize('name', CHECKS_MOVED)
def test_checks_moved_with_alias(name):
    "Issue 14: the independent checks live in setsens.dfcnn_checks; the old import from setsens.dfcnn warns and gives the same object."
    import setsens.dfcnn, setsens.dfcnn_checks
    assert name not in vars(setsens.dfcnn) and name not in setsens.dfcnn.__all__
    with pytest.warns(DeprecationWarning, match=f'setsens.dfcnn.{name} has moved: import it from setsens.dfcnn_checks'):
        obj = getattr(setsens.dfcnn, name)
    assert obj is getattr(setsens.dfcnn_checks, name)
    ns = {}
    with pytest.warns(DeprecationWarning, match=f'setsens.dfcnn.{name} has moved'):
        exec(f'from setsens.dfcnn import {name} as old', ns)
    assert ns['old'] is getattr(setsens.dfcnn_checks, name)


def test_checks_use_the_public_validators_of_dfcnn():
    "setsens.dfcnn_checks validates with setsens.dfcnn's (now public) checks: same objects, same messages."
    import setsens.dfcnn as D, setsens.dfcnn_checks as C
    for n in ('DFCNN', 'check_model', 'check_X', 'check_y', 'check_h', 'parse_k', 'functional_state', 'forward_backward'):
        assert getattr(C, n) is getattr(D, n) and n in D.__all__
    net, X, y, _ = trained_dfcnn(3, 4, 2, 5, seed=0)
    with pytest.raises(ValueError, match=r'^h: layer 3 out of range 1..2'): C.layer_jacobian(net, X, 3)
    with pytest.raises(ValueError, match=r'^k: empty index set'): C.dense_layer_blocks(net, X, y, [], 1)
    with pytest.raises(ValueError, match=r'^model: expected a DFCNN'): C.solution_set(nn.Linear(3, 1), X, 1)
    with pytest.raises(ValueError, match=r'^y: expected 5 labels'): C.project_layer(net, X, y[:3], 1, net.weights()[0].detach().reshape(-1))


def test_from_sequential_is_a_class_method():
    g = torch.Generator().manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 4, bias=False), nn.ReLU(),
                        nn.Linear(4, 1, bias=False)).double()
    net = DFCNN.from_sequential(seq)
    X = torch.randn(5, 3, generator=g, dtype=f64)
    assert type(net) is DFCNN and net.depth == 2
    torch.testing.assert_close(net(X), seq(X)[:, 0], rtol=0, atol=0)
