"""The attribution benchmarks' own machinery (issue 16): the MLP re-training behind `benchmarks/attribution_mlp.py` and the
set-up plumbing of `benchmarks/peers/side_by_side.py` (whose peers run only in their own environment; the parts tested
here import nothing but numpy and torch)."""
import importlib.util, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from setsens.risk import Risk

ROOT = Path(__file__).resolve().parents[1]


def _load(rel, name):
    spec = importlib.util.spec_from_file_location(name, ROOT/rel)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


mlp_bench = _load('benchmarks/attribution_mlp.py', 'attribution_mlp_bench')
peers = _load('benchmarks/peers/side_by_side.py', 'side_by_side_bench')


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 784, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def test_lbfgs_fit_trains_the_network_not_only_the_weight_decay():
    "The first version minimised only (μ/2)‖w‖² (`Risk.value()` carries no graph) and returned w ≈ 0 at chance accuracy."
    X, Y = _data()
    net = mlp_bench.mlp()
    w0 = Risk(net, F.cross_entropy, X, Y).w
    r = mlp_bench.lbfgs_fit(net, X, Y, w0, 1e-2, 1e-6)
    fc = torch.func.functional_call(net, r.unflatten(r.w), (X,))
    assert float((fc.argmax(1) == Y).double().mean()) == 1.0          # 30 random points, 109k weights: it interpolates
    assert float(r.w.norm()) > 1.0
    assert float((r.grad() + 1e-2*r.w).norm()) <= 1e-6


def test_newton_fit_reaches_the_minimiser_and_leave_one_out_moves_it():
    X, Y = _data()
    net, mu = mlp_bench.mlp(), 1e-2
    r = mlp_bench.lbfgs_fit(net, X, Y, Risk(net, F.cross_entropy, X, Y).w, mu, 1e-6)
    r, gn, hvps, why = mlp_bench.newton_fit(r, mu, 1e-10)
    assert why == 'converged' and gn <= 1e-10 and hvps > 0
    # an independent gradient of the objective (autograd through the module's own forward) at the result
    w = r.w.clone().requires_grad_()
    obj = F.cross_entropy(torch.func.functional_call(net, r.unflatten(w), (X,)), Y) + 0.5*mu*w.pow(2).sum()
    g, = torch.autograd.grad(obj, w)
    assert float(g.norm()) <= 1e-9
    keep = torch.arange(30) != 3
    ri, gi, _, whyi = mlp_bench.refit(net, X[keep], Y[keep], r.w, mu, 1e-10)
    assert whyi.startswith('converged') and gi <= 1e-10 and 0 < float((ri.w - r.w).norm()) < float(r.w.norm())


def test_newton_fit_reports_a_direction_that_does_not_descend():
    "At w = 0 the tanh network's Hessian is indefinite (μ small): the run must say so, not claim convergence."
    X, Y = _data()
    net = mlp_bench.mlp()
    r = Risk(net, F.cross_entropy, X, Y)
    r = r.at(w=torch.zeros_like(r.w))
    r, gn, _, why = mlp_bench.newton_fit(r, 1e-6, 1e-12, steps=3)
    assert why in ('not descent', 'steps') and gn > 1e-12


def test_newton_fit_names_an_uphill_direction(monkeypatch):
    "A solve that returns an uphill direction (here d = +∇, forced) must end in 'not descent' after one product count, never a step."
    from types import SimpleNamespace
    X, Y = _data()
    r = Risk(mlp_bench.mlp(), F.cross_entropy, X, Y)
    monkeypatch.setattr(mlp_bench, 'minres', lambda op, b, **kw: (-b, SimpleNamespace(matvecs=7)))
    r2, gn, hv, why = mlp_bench.newton_fit(r, 1e-2, 1e-12)
    assert why == 'not descent' and hv == 7 and torch.equal(r2.w, r.w) and gn > 1e-12


def test_lowest_eig_and_escape_at_an_exact_saddle():
    """x ↦ a·tanh(Bx) with all weights 0 is a critical point of the mean squared error (tanh 0 = 0 and a = 0). There H is
    [[0, C], [Cᵀ, 0]] with each row of C equal to −2·mean(y x), so λ_min(H + μI) = μ − 2‖mean(y x)‖ (three times); the
    gradient is 0, so Newton alone calls it converged, and the negative-curvature step must lower the objective."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(16, 2, generator=g, dtype=torch.float64), torch.randn(16, 1, generator=g, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.Tanh(), nn.Linear(3, 1, bias=False)).double()
    r, mu = Risk(net, F.mse_loss, X, Y), 1e-2
    r = r.at(w=torch.zeros_like(r.w))
    assert float((r.grad() + mu*r.w).norm()) == 0 and mlp_bench.newton_fit(r, mu, 1e-10)[3] == 'converged'
    lam, v, h = mlp_bench.lowest_eig(r, mu)
    assert abs(lam - (mu - 2*float((Y*X).mean(0).norm()))) < 1e-8 and h > 0
    assert abs(float(v @ r.hvp(v)) + mu - lam) < 1e-8                     # v is its eigenvector
    r2, h2, lam2 = mlp_bench.escape(r, mu)
    assert lam2 == lam and mlp_bench.objective(r2, mu) < mlp_bench.objective(r, mu) - 1e-3


def test_refit_steps_off_a_saddle_only_below_1e_6(monkeypatch):
    """The control flow of `refit`: 'not descent' with ‖∇‖ ≤ 1e-6 calls `escape` (its products counted) before the next
    L-BFGS/Newton cycle; above 1e-6 it does not; λ_min ≥ 0 there (the solve failed, no saddle) is reported if no later
    cycle converges; a passed deadline stops it."""
    X, Y = _data()
    net = mlp_bench.mlp()
    calls = []
    def fake_newton(r, mu, gtol, deadline=None):
        calls.append('newton')
        return (r, 1e-11, 3, 'converged') if calls.count('newton') == ok_at else (r, gs.pop(0), 5, 'not descent')
    monkeypatch.setattr(mlp_bench, 'newton_fit', fake_newton)
    monkeypatch.setattr(mlp_bench, 'lbfgs_fit', lambda net, X, Y, w, mu, gtol: (calls.append('lbfgs'), Risk(net, F.cross_entropy, X, Y).at(w=w))[1])
    monkeypatch.setattr(mlp_bench, 'escape', lambda r, mu: (calls.append('escape'), (r, 11, lam))[1])
    w0 = Risk(net, F.cross_entropy, X, Y).w
    ok_at, gs, lam = 3, [1e-3, 1e-8], -1.
    *_, hv, why = mlp_bench.refit(net, X, Y, w0, 1e-2, 1e-10)
    assert calls == ['newton', 'lbfgs', 'newton', 'escape', 'lbfgs', 'newton'] and hv == 5 + 5 + 11 + 3
    assert why == 'converged after 2 restart(s) (1 off a saddle)'
    calls.clear(); ok_at, gs, lam = 99, [1e-8, 1e-8], 0.5
    *_, why = mlp_bench.refit(net, X, Y, w0, 1e-2, 1e-10, cycles=2)
    assert calls == ['newton', 'escape', 'lbfgs']*2 and why == 'not descent, though H + μI ⪰ 5.0e-01'
    calls.clear(); gs = [1e-8]
    *_, why = mlp_bench.refit(net, X, Y, w0, 1e-2, 1e-10, deadline=0.)
    assert calls == ['newton'] and why == 'time cap'


def test_newton_fit_stops_at_its_deadline():
    X, Y = _data()
    r = Risk(mlp_bench.mlp(), F.cross_entropy, X, Y)
    r2, gn, hv, why = mlp_bench.newton_fit(r, 1e-2, 1e-12, deadline=0.)
    assert why == 'time cap' and hv == 0 and torch.equal(r2.w, r.w) and gn > 1e-12


@pytest.mark.parametrize('arch', [(784, 10), (784, 128, 64, 10)])
def test_peers_model_is_the_risks_model_at_w(arch):
    "The peers rebuild the model from the flat w̄: its outputs equal setsens' at w̄ (LR and the dattri-size MLP)."
    X, _ = _data(5)
    layers = [nn.Linear(arch[0], arch[1])]
    for a, b in zip(arch[1:-1], arch[2:]): layers += [nn.Tanh(), nn.Linear(a, b)]
    net = nn.Sequential(*layers).double()
    r = Risk(net, F.cross_entropy, X, torch.zeros(5, dtype=torch.long))
    w = torch.randn(r.p, dtype=torch.float64)
    ours = torch.func.functional_call(net, r.unflatten(w), (X,))
    theirs = peers.model_at(w, torch.float64, arch, 'tanh')(X)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-12)


def test_lds_score_against_a_hand_computation():
    rng = np.random.default_rng(0)
    S = rng.normal(size=(3, 8))
    masks = rng.random((6, 8)) < 0.5
    actual = rng.normal(size=(3, 6))
    want = np.mean([peers.spearman([S[j, ~m].sum() for m in masks], actual[j]) for j in range(3)])
    assert abs(peers.lds_score(S, masks, actual) - want) < 1e-12
    # a perfect predictor (the actual change is the predicted one, up to a monotone map) scores 1
    pred = S @ (~masks).T.astype(float)
    assert abs(peers.lds_score(S, masks, np.exp(pred)) - 1) < 1e-12


def test_attribution_mlp_runs_end_to_end(tmp_path):
    out = tmp_path/'mlp.pt'
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'attribution_mlp.py'), '--n', '40', '--ntest', '3', '--loo', '3',
                        '--lds', '3', '--threads', '1', '--method', 'lanczos', '--save', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert '| LDS, per test point' in r.stdout and 'left out: none' in r.stdout and '3 of 3 LOO' in r.stdout
    d = torch.load(out, weights_only=True)
    assert d['ours_full'].shape == (3, 40) and d['lds_masks'].shape == (3, 40) and d['lds_actual'].shape == (3, 3)
    assert d['idx'].shape == (3,) and d['actual'].shape == (3,)
    torch.testing.assert_close(d['ours'], d['ours_full'].mean(0))


def test_attribution_mlp_time_budget_says_so(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'attribution_mlp.py'), '--n', '20', '--ntest', '2', '--loo', '2',
                        '--lds', '2', '--threads', '1', '--method', 'lanczos', '--time-budget', '0'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and 'no re-training finished within --time-budget 0 s' in r.stderr


def test_attribution_mlp_halves_only(tmp_path):
    "`--loo 0`: the random halves alone (the LDS), no LOO rows, and a set-up file side_by_side.py reads as halves-only."
    out = tmp_path/'mlp.pt'
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'attribution_mlp.py'), '--n', '40', '--ntest', '3', '--loo', '0',
                        '--lds', '2', '--threads', '1', '--method', 'lanczos', '--save', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert '| LDS, per test point' in r.stdout and '| LOO' not in r.stdout and '0 of 0 LOO' in r.stdout
    d = torch.load(out, weights_only=True)
    assert d['idx'].shape == (0,) and d['lds_masks'].shape[0] == d['lds_actual'].shape[1] >= 1


def test_attribution_mlp_resume_split_and_loo_from(tmp_path):
    """`--resume` takes w̄, the scores and the converged halves of an earlier file (re-training none of them), `--lds-from`
    skips the halves before it, `--loo-from` carries the LOO ground truth over, and a file of another problem is refused."""
    run = lambda *args: subprocess.run([sys.executable, str(ROOT/'benchmarks'/'attribution_mlp.py'), '--n', '40', '--ntest', '3',
                                        '--threads', '1', '--method', 'lanczos', *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    a, b = tmp_path/'a.pt', tmp_path/'b.pt'
    r = run('--loo', 2, '--lds', 2, '--save', a)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = run('--loo', 0, '--lds', 4, '--lds-from', 4, '--resume', a, '--loo-from', a, '--save', b)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('(taken)') == 2 and 'LDS 3/4' not in r.stdout and 'LDS 4/4: ‖∇‖' in r.stdout and '(from --loo-from)' in r.stdout
    da, db = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert torch.equal(da['w'], db['w']) and torch.equal(da['ours_full'], db['ours_full']) and torch.equal(da['idx'], db['idx'])
    assert torch.equal(db['lds_masks'][:2], da['lds_masks']) and torch.equal(db['lds_actual'][:, :2], da['lds_actual'])
    assert db['lds_masks'].shape[0] + len(db['lds_left_out']) == 3
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'attribution_mlp.py'), '--n', '30', '--ntest', '3', '--loo', '0',
                        '--lds', '1', '--threads', '1', '--resume', str(a)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and 'differ from this run' in r.stderr
