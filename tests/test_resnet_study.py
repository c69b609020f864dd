"Tests for setsens.resnet_study and setsens.poisoning: float64 oracles on a small network, the eq. 14 / mean scaling, the perturbation, re-training, and the study's wiring on real data at a tiny size."
import warnings
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from setsens.report import Result
from setsens.risk import Risk
from setsens.graphical import solution_shift
from setsens.poisoning import (margin_cross_entropy, example_losses, Poisoning, calibrate_step, poison, retrain,
                               mean_example_loss, linearization_gap)
from setsens.resnet_study import table1_shifts, row_losses, run_study, StudySize


# ---------------------------------------------------------------------------------------------------
# a small float64 conv net with BatchNorm in eval mode (non-trivial running statistics)

def _small_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
                        nn.Linear(3*4*4, 3)).double()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2); net[1].running_var.uniform_(0.5, 2.)
        net[1].weight.uniform_(0.5, 1.5); net[1].bias.uniform_(-0.1, 0.1)
    return net.eval()

def _data(n=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)

def _flat(net): return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

def _dense(net, X, Y):
    "Explicit H (p, p) and J (p, n·d) of the mean margin cross-entropy, by autograd."
    names = [k for k, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    bufs = dict(net.named_buffers())
    def R(w, X):
        prm = {k: t.view(s) for k, t, s in zip(names, w.split(sizes), shapes)}
        return margin_cross_entropy(torch.func.functional_call(net, (prm, bufs), (X,)), Y).mean()
    w = _flat(net)
    H = torch.autograd.functional.hessian(lambda w: R(w, X), w)
    J = torch.autograd.functional.jacobian(lambda X: torch.func.grad(R)(w, X), X).reshape(len(w), -1)
    return H, J


def test_margin_cross_entropy_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    Z = 10*torch.randn(9, 5, generator=g, dtype=torch.float64); y = torch.randint(0, 5, (9,), generator=g)
    Z[0, y[0]] += 50                                     # a very confident example (loss about e^-60)
    import mpmath
    mpmath.mp.dps = 60                                   # independent oracle: -log softmax in 60-digit arithmetic
    oracle = lambda Z: torch.tensor([float(mpmath.log(sum(mpmath.exp(mpmath.mpf(float(v))) for v in z)) - mpmath.mpf(float(z[c])))
                                     for z, c in zip(Z, y)], dtype=torch.float64)
    ref = oracle(Z)
    torch.testing.assert_close(margin_cross_entropy(Z, y), ref, rtol=1e-13, atol=0)
    big = ref > 1e-4      # where F.cross_entropy does not cancel (its absolute error is ~ eps·max|z| ≈ 1e-15), it agrees too
    torch.testing.assert_close(F.cross_entropy(Z, y, reduction='none')[big], ref[big], rtol=1e-10, atol=0)
    assert float(F.cross_entropy(Z[:1], y[:1])) == 0. < float(ref[0])   # ... and where it cancels, it returns 0
    gm = torch.func.grad(lambda z: margin_cross_entropy(z, y).sum())(Z)
    P = torch.softmax(Z, 1); onehot = F.one_hot(y, 5).bool()
    gc = torch.where(onehot, -(P.masked_fill(onehot, 0).sum(1, keepdim=True)), P)   # p − e_y, its y entry without cancellation
    torch.testing.assert_close(gm, gc, rtol=1e-10, atol=1e-300)
    # float32: the margin form keeps its relative precision on every example
    torch.testing.assert_close(margin_cross_entropy(Z.float(), y).double(), oracle(Z.float()), rtol=1e-5, atol=0)


def test_table1_shifts_against_dense_pinv_and_eq14_scaling():
    net = _small_net(); X, Y = _data()
    n = len(X)
    risk = Risk(net, margin_cross_entropy, X, Y)
    w = risk.w
    H, J = _dense(net, X, Y)
    g = torch.Generator().manual_seed(2)
    rows = []
    for K in ([3], [0, 2, 5]):
        D = torch.randn(len(K), 2, 4, 4, generator=g, dtype=torch.float64)
        D = D/D.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        rows.append(Poisoning(torch.tensor(K), D, 0.3))
    T = table1_shifts(risk, rows, rtol=1e-12, maxiter=400, track=False)
    assert bool(T['info'].converged.all())
    Hp = torch.linalg.pinv(H, hermitian=True, rtol=1e-10)
    for j, P in enumerate(rows):
        dXfull = P.full(X).reshape(-1)
        # eq. 17 with 1/|K| on the mixed term; J carries the mean's 1/n, so scale by n/|K|
        oracle_eq14 = -Hp @ (J @ dXfull)*(n/len(P.idx))
        oracle_mean = -Hp @ (J @ dXfull)
        torch.testing.assert_close(T['dw_eq14'][:, j], oracle_eq14, rtol=1e-6, atol=1e-8*float(oracle_eq14.norm()))
        torch.testing.assert_close(T['dw_mean'][:, j], oracle_mean, rtol=1e-6, atol=1e-8*float(oracle_mean.norm()))
        # the engine's own eq. 14 path gives the same shift
        dw, _ = solution_shift(risk, P.dX, idx=P.idx, weighting="eq14", rtol=1e-12, maxiter=400)
        torch.testing.assert_close(dw, T['dw_eq14'][:, j], rtol=1e-6, atol=1e-9*float(dw.norm()))


def test_eq14_over_mean_is_n_over_K_exactly_on_the_J_term_and_truncated_solves():
    net = _small_net(1); X, Y = _data(8, 3)
    n = len(X)
    risk = Risk(net, margin_cross_entropy, X, Y)
    K = torch.tensor([1, 6])
    dX = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    full = torch.zeros_like(X); full[K] = dX
    # the J term: eq. 14's (1/|K|) Σ_K J_k Δx_k is n/|K| times the mean risk's (1/n) Σ_K J_k Δx_k
    J = _dense(net, X, Y)[1]
    torch.testing.assert_close(risk.jx(full)*(n/len(K)), (J @ full.reshape(-1))*(n/len(K)), rtol=1e-10, atol=1e-14)
    # ... and so are the (truncated, non-converged) MINRES solutions: iterates scale with b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d14, i14 = solution_shift(risk, dX, idx=K, weighting="eq14", maxiter=3)
        dmn, imn = solution_shift(risk, dX, idx=K, weighting="mean", maxiter=3)
    assert not bool(i14.converged) and i14.iterations == imn.iterations == 3
    torch.testing.assert_close(d14, dmn*(n/len(K)), rtol=1e-9, atol=1e-12*float(d14.norm()))


def test_retrain_reduces_monitored_loss_and_stops():
    net = _small_net(2); X, Y = _data(10, 4)
    w0 = _flat(net)
    l0 = float(example_losses(net, w0, X, Y).mean())
    w, h = retrain(net, w0, X, Y, steps=30, lr=0.2, monitor=[0, 1])
    assert h['steps'] == 30 and len(h['loss']) == 31
    assert float(example_losses(net, w, X, Y).mean()) < 0.9*l0
    torch.testing.assert_close(h['loss'][-1], float(example_losses(net, w, X, Y).double().mean()), rtol=1e-10, atol=0)
    w1, h1 = retrain(net, w0, X, Y, steps=200, lr=0.2, monitor=[0, 1], stop_below=0.5*h['monitored'][0])
    assert h1['monitored'][-1] <= 0.5*h['monitored'][0] and h1['steps'] < 200
    w2, h2 = retrain(net, w0, X, Y, steps=0)
    torch.testing.assert_close(w2, w0, rtol=0, atol=0)
    with pytest.raises(ValueError, match="train mode"): retrain(net.train(), w0, X, Y, steps=1)


def test_bad_input():
    net = _small_net(); X, Y = _data()
    w = _flat(net)
    with pytest.raises(ValueError, match="target, delta"): poison(net, X, Y, [0])
    with pytest.raises(ValueError, match="target, delta"): poison(net, X, Y, [0], target=1., delta=1.)
    with pytest.raises(ValueError, match="idx"): poison(net, X, Y, [0, 0], delta=1.)
    with pytest.raises(ValueError, match="idx"): poison(net, X, Y, [7], delta=1.)
    with pytest.raises(ValueError, match="target"): calibrate_step(net, w, X[:1], Y[:1], torch.ones_like(X[:1]), 1e-30)
    with pytest.raises(ValueError, match="X, Y"): example_losses(net, w, X, Y[:3])
    with pytest.raises(ValueError, match="size"): run_study(StudySize(n=5, rows=(1, 6)))


@pytest.fixture(scope="module")
def resnet():
    from setsens.cifar import load_pretrained, cifar10
    model = load_pretrained()
    X, Y = cifar10(n=8)
    return model, X, Y


def test_gradient_direction_raises_the_loss_and_calibration_meets_target(resnet):
    model, X, Y = resnet
    w = _flat(model)
    P = poison(model, X, Y, [0, 3], target=0.003)
    torch.testing.assert_close(P.directions.flatten(1).norm(dim=1), torch.ones(2), rtol=1e-5, atol=0)
    mean_at = lambda D, d: float(example_losses(model, w, X[P.idx] + d*D, Y[P.idx]).double().mean())
    clean = mean_at(P.directions, 0.)
    assert clean < 0.003 <= mean_at(P.directions, P.delta) < 0.003*1.05
    assert mean_at(P.directions, 0.5*P.delta) < mean_at(P.directions, P.delta)
    R = torch.randn(P.directions.shape, generator=torch.Generator().manual_seed(0))
    R = R/R.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert mean_at(R, P.delta) < 0.1*mean_at(P.directions, P.delta)       # steeper than a random direction


def test_shift_reduces_perturbed_loss_on_tiny_subset(resnet):
    model, X, Y = resnet
    risk = Risk(model, margin_cross_entropy, X, Y, hvp_mode='rev_rev_cached')
    P = poison(model, X, Y, [0], target=0.0041)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        T = table1_shifts(risk, [P], maxiter=12, track=False)
    L = row_losses(model, risk.w, X, Y, P, {'eq14': T['dw_eq14'][:, 0], 'mean': T['dw_mean'][:, 0]})
    # MINRES from 0 never raises the residual (`< 1` cannot fail): compare with independent computations instead
    b = risk.jx(P.full(X)[..., None])
    true_res = float(torch.linalg.vector_norm(risk.hvp(T['dw_mean']) + b))
    assert abs(true_res - float(T['info'].resnorm)) <= 1e-2*float(b.norm())        # the reported residual is the real one
    Hb = risk.hvp(b)
    one_step = float((b - (b*Hb).sum()/(Hb*Hb).sum()*Hb).norm()/b.norm())           # best multiple of b: one Krylov step
    assert float(T['rel_residual'][0]) <= one_step*(1 + 1e-3) and one_step < 1
    assert L['eq14']['perturbed'] < 0.9*L['w_bar']['perturbed']
    assert L['eq14']['perturbed'] < L['mean']['perturbed'] <= L['w_bar']['perturbed']*1.001


def test_run_study_wiring(tmp_path):
    size = StudySize(n=6, rows=(1, 2), k_seeds=3, seeds=2, maxiter=2, retrain_steps=2, grid=3, batch_size=6,
                     hvp_mode='rev_rev_cached', sweep=(0.5, 1.))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        D = run_study(size, device='cpu', out=tmp_path, progress=False)
    R = D['results']
    assert all(isinstance(r, Result) for r in R) and len(R) >= 12
    assert all('n=6 images' in r.note for r in R if 'by construction' in r.note)
    assert (tmp_path/'resnet_figure4.png').stat().st_size > 0 and (tmp_path/'resnet_table1_convergence.png').is_file()
    assert D['table']['history'].shape == (2, 2)
    assert len(D['sweep']) == 4 and D['seeds']['shifts'].shape == (2, D['table']['dw_eq14'].shape[0])


@pytest.mark.parametrize('name', ['margin_cross_entropy', 'example_losses', 'Poisoning', 'calibrate_step', 'poison',
                                  'linearization_gap', 'retrain'])
def test_moved_poisoning_names_still_import_from_resnet_study(name):
    "Issue 14: the perturbation machinery moved to setsens.poisoning; the old import warns and gives the same object."
    import setsens.resnet_study, setsens.poisoning
    with pytest.warns(DeprecationWarning, match=f'setsens.resnet_study.{name} has moved: import it from setsens.poisoning'):
        obj = getattr(setsens.resnet_study, name)
    assert obj is getattr(setsens.poisoning, name)


def test_mean_example_loss_and_linearization_gap_small_net():
    net = _small_net(3); X, Y = _data(6, 5)
    w = _flat(net)
    with torch.no_grad(): ref = F.cross_entropy(net(X), Y).item()
    assert abs(mean_example_loss(net, w, X, Y, batch_size=4) - ref) < 1e-12
    P = poison(net, X, Y, [1, 2], delta=1.)
    small, big = linearization_gap(net, X, Y, P.scaled(1e-5)), linearization_gap(net, X, Y, P.scaled(1.))
    assert abs(small['ratio'] - 1) < 1e-4 and small['cos'] > 1 - 1e-8          # first order: exact as δ → 0
    assert abs(big['ratio'] - 1) > abs(small['ratio'] - 1)


def test_fit_last_layer_reaches_the_minimiser_from_the_pretrained_start():
    # on 32 images a full Newton step from the pretrained layer overshoots (‖∇‖ stayed at 8.5 without the line search)
    from setsens.cifar import load_pretrained, cifar10
    from setsens.resnet_study import fit_last_layer
    m = load_pretrained(dtype=torch.float64)
    X, Y = cifar10(n=32, dtype=torch.float64)
    w, gn = fit_last_layer(m, X, Y, weight_decay=1e-3)
    assert gn <= 1e-11      # the rounding floor of ‖∇‖ here: 2.8e-12 on an AVX-512 machine (Newton cannot go below it)
    # the oracle: the same objective through the whole network by autograd, at w
    f = lambda w_: F.cross_entropy(torch.func.functional_call(m, {'linear.weight': w_[:640].view(10, 64),
                                                                  'linear.bias': w_[640:]}, (X,)), Y) + 0.5e-3*w_.pow(2).sum()
    assert float(torch.func.grad(f)(w).norm()) < 1e-11
    assert torch.equal(m.linear.weight, load_pretrained(dtype=torch.float64).linear.weight)   # the model is not changed
