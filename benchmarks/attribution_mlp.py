"""Issue 16, the MNIST MLP at dattri's size: leave-one-out (LOO) and linear-datamodeling (LDS) ground truth by
deterministic warm-start re-training, setsens' scores against it, and a --save file for the peers
(`benchmarks/peers/side_by_side.py`, which then scores the same model on the same ground truth).

    .venv/bin/python benchmarks/attribution_mlp.py [--n 1000] [--ntest 100] [--loo 50] [--lds 50] [--time-budget s] [--save /tmp/mlp.pt]
                                                   [--loo 0 --loo-from earlier.pt]

Model: dattri's `MLPMnist` (784-128-64-10, 109,386 parameters) without dropout and with tanh in place of ReLU: the
influence function and Newton re-training need a twice-differentiable loss, and a ReLU network's minimiser can sit
on a kink. Data: the first n MNIST training images and ntest test images, normalised as dattri does
((x/255 − 0.1307)/0.3081), float64. Objective: mean cross-entropy + (μ/2)‖w‖², μ = 1e-2 (dattri trains without
weight decay by SGD from random seeds; its LOO ground truth is the average over seeds, dominated by seed noise,
which is why every method scores ≤ 0.02 there). With μ = 1e-3 the L-BFGS end point (‖∇‖ ≈ 6e-7) still had
negative curvature, and Newton directions were not descent directions; with μ = 1e-2 it is a strict local
minimiser and Newton converges quadratically.

Training: full-batch L-BFGS (strong Wolfe) from dattri-style initialisation (torch's default, seed 0) to ‖∇‖ ≤ 1e-6
(or 40 rounds of 200 iterations), then Newton's method with `setsens.krylov.minres` steps on H + μI (inexact: rtol = min(1e-2, ‖∇‖)), Armijo
backtracking, to ‖∇‖ ≤ gtol. Every re-training starts at w̄ and runs the same Newton iteration on the smaller data
(the random halves first run L-BFGS to 1e-6, since half the data moves w̄ far). Where a Newton direction is not a
descent direction (H + μI indefinite: not yet near a minimiser), L-BFGS runs to 1e-6 from there and Newton again (up
to `--cycles`, default 8, times; `--refit-cap` seconds). Where that happens below ‖∇‖ = 1e-6, L-BFGS has nothing left
to do: the run sits near a saddle (on the third random half λ_min(H + μI) = −3.4e-4, twice, at ‖∇‖ = 8e-8), and it
first steps along the eigenvector of the most negative eigenvalue (ARPACK on the HVP, seeded; the step of lowest
objective among 2⁻¹²…2⁴). A run that still ends above gtol is reported and left out of the metrics. (The LOO ground
truth of the recorded run was computed before the saddle step existed; all 50 of its re-trainings converged, 11 after
an L-BFGS restart.) The re-trained minimiser is a local minimiser near w̄
(‖w_S − w̄‖ ≈ 3 for a half): the ground truth has no seed noise.

`--loo 0 --loo-from FILE` re-trains only the halves and takes the LOO ground truth from an earlier `--save` file of
the same problem (the data, μ and w̄ are checked bit for bit). `--resume FILE` (repeatable) takes w̄, the scores and
the converged halves such files hold and re-trains the others; with `--lds-from K` two processes can share the halves
(one thread each), and a last `--resume A --resume B --time-budget 0` run merges them.

Metrics: for LOO, the predicted change of the mean test loss (the scores averaged over test points) against the
re-trained change, Pearson and Spearman over the removed points; and per test point, Spearman over the removed
points, averaged. For the LDS (dattri's definition, with re-training instead of seeds): per test point, Spearman
over the subsets between Σ_{i∉S} score_i and the re-trained change of that test point's loss, averaged.
"""
import argparse, importlib.util, math, time, warnings
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from setsens.risk import Risk
from setsens.kernels import load_mnist
from setsens.krylov import minres
from setsens.attribution import influence_scores
from scipy.sparse.linalg import LinearOperator, eigsh

f64 = torch.float64


_spec = importlib.util.spec_from_file_location('attribution_bench', Path(__file__).resolve().parent/'attribution.py')
_bench = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(_bench)
pearson, spearman = _bench.pearson, _bench.spearman          # the correlations of benchmarks/attribution.py, not a copy


def mlp(arch=(784, 128, 64, 10)):
    "dattri's MLPMnist without dropout, tanh in place of ReLU, float64, torch's default initialisation (seed 0)."
    torch.manual_seed(0)
    layers = []
    for k, (a, b) in enumerate(zip(arch[:-1], arch[1:])):
        if k: layers.append(nn.Tanh())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers).double()


def mnist(n, ntest, device='cpu'):
    "The first n MNIST training and ntest test images, flattened and normalised as dattri does (float64), and their labels."
    norm = lambda x: ((torch.tensor(x, dtype=f64)/255 - 0.1307)/0.3081).flatten(1).to(device)
    (xs, ys), (xt, yt) = load_mnist('train'), load_mnist('test')
    lab = lambda y: torch.tensor(y).long().to(device)
    return norm(xs[:n]), lab(ys[:n]), norm(xt[:ntest]), lab(yt[:ntest])


def same_problem(d, mu, **tensors):
    "Whether the --save file `d` holds this μ and, bit for bit, these tensors (X, Y, Xt, Yt, w …)."
    return d['lam'] == mu and all(torch.equal(d[k], v) for k, v in tensors.items())


def objective(risk, mu):
    return float(risk.value()) + 0.5*mu*float(risk.w.pow(2).sum())


def lbfgs_fit(net, X, Y, w0, mu, gtol, rounds=40):
    """Full-batch L-BFGS on mean cross-entropy + (μ/2)‖w‖² from the flat w0, until ‖∇‖ ≤ gtol or `rounds` rounds;
    returns the `Risk` at the end."""
    risk = Risk(net, F.cross_entropy, X, Y)
    w = w0.clone().requires_grad_()
    fn = lambda: F.cross_entropy(torch.func.functional_call(net, risk.unflatten(w), (X,)), Y) + 0.5*mu*w.pow(2).sum()
    opt = torch.optim.LBFGS([w], lr=1, max_iter=200, history_size=50, tolerance_grad=gtol/10, tolerance_change=0,
                            line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = fn(); l.backward(); return l
    for _ in range(rounds):
        opt.step(closure)
        if float(w.grad.norm()) <= gtol: break
    return risk.at(w=w.detach())


def newton_fit(risk, mu, gtol, steps=25, deadline=math.inf):
    """Newton's method on mean loss + (μ/2)‖w‖²: MINRES on H + μI to rtol min(1e-2, ‖∇‖), Armijo backtracking.
    Returns (risk at the end, ‖∇‖, HVPs, why it stopped: 'converged', 'not descent', 'steps' or 'time cap', the
    last when `time.perf_counter()` passed `deadline` before a step)."""
    hvps = 0
    for _ in range(steps):
        g = risk.grad() + mu*risk.w
        gn = float(g.norm())
        if gn <= gtol: return risk, gn, hvps, 'converged'
        if time.perf_counter() > deadline: return risk, gn, hvps, 'time cap'
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            d, info = minres(lambda v: risk.hvp(v) + mu*v, -g, rtol=min(1e-2, gn), maxiter=5000)
        hvps += info.matvecs
        slope = float(g @ d)
        if not slope < 0: return risk, gn, hvps, 'not descent'
        s, f0 = 1., objective(risk, mu)
        while objective(risk.at(w=risk.w + s*d), mu) > f0 + 1e-4*s*slope and s > 1e-6: s /= 2
        risk = risk.at(w=risk.w + s*d)
    return risk, float((risk.grad() + mu*risk.w).norm()), hvps, 'steps'


def lowest_eig(risk, mu, tol=1e-2):
    """The smallest eigenpair (λ, v) of H + μI, by ARPACK (`scipy.sparse.linalg.eigsh`, which='SA', 40 Lanczos
    vectors) on the risk's HVP, from a seeded start (deterministic); returns (λ, v, HVPs)."""
    n = [0]
    def mv(v):
        n[0] += 1
        v = torch.from_numpy(np.ascontiguousarray(v).reshape(-1)).to(risk.w)
        return (risk.hvp(v) + mu*v).cpu().numpy()
    v0 = np.random.default_rng(0).standard_normal(risk.p)
    lam, V = eigsh(LinearOperator((risk.p, risk.p), matvec=mv, dtype=np.float64), k=1, which='SA', tol=tol, ncv=min(40, risk.p), v0=v0)
    return float(lam[0]), torch.from_numpy(V[:, 0]).to(risk.w), n[0]


def escape(risk, mu):
    """A step off a saddle: along the eigenvector v of the most negative eigenvalue λ of H + μI (signed so that it does
    not go uphill), the step t ∈ {2⁻¹², …, 2⁴} of lowest objective (the quadratic model gains ½λt², the higher-order
    terms decide how far). Returns (risk after the step, HVPs, λ); the risk is unchanged when λ ≥ 0 or no step gains."""
    lam, v, h = lowest_eig(risk, mu)
    if lam >= 0: return risk, h, lam
    if float((risk.grad() + mu*risk.w) @ v) > 0: v = -v
    f0, best = objective(risk, mu), None
    for t in (2.**j for j in range(-12, 5)):
        f = objective(risk.at(w=risk.w + t*v), mu)
        if f < f0 and (best is None or f < best[0]): best = (f, t)
    return (risk if best is None else risk.at(w=risk.w + best[1]*v)), h, lam


def refit(net, X, Y, w0, mu, gtol, lbfgs_first=False, cycles=4, deadline=math.inf):
    """Re-train from w0 on (X, Y): Newton from w0 (after L-BFGS to 1e-6 when `lbfgs_first`). Where a Newton direction
    does not descend (H + μI indefinite: not yet near a minimiser), the next cycle starts with L-BFGS to 1e-6; where
    ‖∇‖ ≤ 1e-6 already (L-BFGS has nothing left to do: near a saddle), with a negative-curvature step (`escape`;
    none when λ_min ≥ 0) first. Up to `cycles` cycles, and none started after `deadline` (`time.perf_counter()`). Returns (risk,
    ‖∇‖, HVPs, 'converged' / 'converged after k restart(s) (j off a saddle)' / why not)."""
    r = Risk(net, F.cross_entropy, X, Y).at(w=w0)
    if lbfgs_first: r = lbfgs_fit(net, X, Y, w0, mu, 1e-6)
    hv, saddles = 0, 0
    for k in range(cycles):
        r, g, h, why = newton_fit(r, mu, gtol, deadline=deadline)
        hv += h
        if why != 'not descent': break
        if time.perf_counter() > deadline: why = 'time cap'; break
        if g <= 1e-6:                                  # L-BFGS to 1e-6 has nothing left to do here: off the saddle first
            r, h, lam = escape(r, mu)
            hv += h
            if lam < 0: saddles += 1
            else: why = f'not descent, though H + μI ⪰ {lam:.1e}'
        r = lbfgs_fit(net, X, Y, r.w, mu, 1e-6)
    if why == 'converged' and k: why = f'converged after {k} restart(s)' + (f' ({saddles} off a saddle)' if saddles else '')
    return r, g, hv, why


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=1000, help='training images')
    ap.add_argument('--ntest', type=int, default=50, help='test images')
    ap.add_argument('--loo', type=int, default=50, help='leave-one-out re-trainings')
    ap.add_argument('--lds', type=int, default=50, help='random 50 %% subsets re-trained')
    ap.add_argument('--mu', type=float, default=1e-2, help='weight decay')
    ap.add_argument('--gtol', type=float, default=1e-10, help='gradient tolerance of every training')
    ap.add_argument('--cycles', type=int, default=8, help='L-BFGS/Newton cycles a re-training may take before it is reported as not converged')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--method', default='block', help="influence_scores' solve: block, lanczos or auto")
    ap.add_argument('--mem-gb', type=float, default=8., help="influence_scores' mem_budget, GiB")
    ap.add_argument('--time-budget', type=float, default=math.inf, help='seconds for all re-trainings: none is started after it (the counts are printed)')
    ap.add_argument('--loo-from', default='', help='with --loo 0: take the LOO ground truth (removed rows, re-trained mean test-loss changes) from this earlier --save file, after checking that its data and w̄ are identical')
    ap.add_argument('--resume', action='append', default=[], help="an earlier --save file of the same problem (data and μ checked bit for bit; repeatable): w̄ and the scores are taken from the first, and the converged halves of each, not re-trained")
    ap.add_argument('--lds-from', type=int, default=1, help='re-train the halves from this one on (1-based; earlier ones only from --resume files): to split the halves between processes')
    ap.add_argument('--refit-cap', type=float, default=math.inf, help='seconds one re-training may start Newton steps and cycles in; past it, it is reported and left out')
    ap.add_argument('--save', default='', help='write the set-up and ground truth here, for benchmarks/peers/side_by_side.py')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    X, Y, Xt, Yt = mnist(a.n, a.ntest)
    net, mu = mlp(), a.mu
    t0 = time.perf_counter()
    resumed = [torch.load(f, weights_only=True) for f in a.resume]
    for f, d0 in zip(a.resume, resumed):
        if not same_problem(d0, mu, X=X, Y=Y, Xt=Xt, Yt=Yt, w=resumed[0]['w']):
            raise SystemExit(f"--resume {f}: its data, μ or w̄ differ from this run's")
    if resumed:                  # w̄ and the scores as the first file holds them
        r, hv, why = Risk(net, F.cross_entropy, X, Y).at(w=resumed[0]['w']), 0, 'converged'
        gn = float((r.grad() + mu*r.w).norm())
    else: r, gn, hv, why = refit(net, X, Y, Risk(net, F.cross_entropy, X, Y).w, mu, a.gtol, lbfgs_first=True)
    t_train = time.perf_counter() - t0
    if not why.startswith('converged'): raise SystemExit(f"training w̄ did not converge: {why}, ‖∇‖ = {gn:.1e}")
    fc = lambda w, X_: torch.func.functional_call(net, r.unflatten(w), (X_,))
    acc = lambda X_, Y_: float((fc(r.w, X_).argmax(1) == Y_).double().mean())
    print(f"w̄: ‖∇R + μw̄‖ = {gn:.1e} after {t_train:.0f} s (Newton: {hv} HVPs); accuracy: training {acc(X, Y):.3f}, "
          f"test {acc(Xt, Yt):.3f}", flush=True)
    prior = None
    if a.loo_from:               # the LOO rows of an earlier run on the very same problem
        if a.loo: raise SystemExit("--loo-from: give --loo 0 (the LOO rows come from the file)")
        prior = torch.load(a.loo_from, weights_only=True)
        if not same_problem(prior, mu, X=X, Y=Y, Xt=Xt, Yt=Yt, w=r.w): raise SystemExit(f"--loo-from {a.loo_from}: its data, μ or w̄ differ from this run's")
        print(f"LOO ground truth: {len(prior['idx'])} removals from {a.loo_from} (same data and w̄, bit for bit)", flush=True)
    t0 = time.perf_counter()
    if resumed:
        S, t_s, solved = resumed[0]['ours_full'], resumed[0]['ours_seconds'], f"from {a.resume[0]}"
    else:
        try:                     # one block Krylov space for all queries: one pass over the basis per step for all columns
            S, info = influence_scores(r, (Xt, Yt), weight_decay=mu, method=a.method, mem_budget=a.mem_gb*2**30)
        except MemoryError as e:
            print(f"  {e}: one Krylov space per query instead", flush=True)
            S, info = influence_scores(r, (Xt, Yt), weight_decay=mu, method='lanczos', mem_budget=a.mem_gb*2**30)
        t_s, solved = time.perf_counter() - t0, f"{info.solve.method}, {info.solve.hvps} HVP columns, {info.solve.status}"
    print(f"scores ({a.ntest}×{a.n}): {t_s:.1f} s ({solved})", flush=True)
    tl = lambda w: F.cross_entropy(fc(w, Xt), Yt, reduction='none').detach()    # per-test-point losses
    q0 = tl(r.w)
    gen = torch.Generator().manual_seed(a.seed)
    idx = torch.randperm(a.n, generator=gen)[:a.loo]
    halves = [torch.randperm(a.n, generator=gen)[:a.n//2] for _ in range(a.lds)]
    done, loo, masks, lds_act, bad, gns, hvs, lo = [], [], [], [], [], [], [], []
    def save():                  # after every re-training: a run stopped early still leaves its ground truth so far
        if not a.save: return
        ok = [k for k, i in enumerate(done) if i not in {b[0] for b in bad}]
        idx_, act_ = (torch.tensor(done, dtype=torch.long)[ok], torch.stack(loo, 1)[:, ok].mean(0) if loo else torch.zeros(0, dtype=f64))
        if prior is not None: idx_, act_ = prior['idx'], prior['actual']
        torch.save({'X': X, 'Y': Y, 'Xt': Xt, 'Yt': Yt, 'w': r.w, 'lam': mu, 'idx': idx_, 'actual': act_,
                    'ours': S.mean(0), 'ours_full': S, 'ours_seconds': t_s,
                    'lds_masks': torch.stack(masks) if masks else torch.zeros(0, a.n, dtype=torch.bool),
                    'lds_actual': torch.stack(lds_act, 1) if lds_act else torch.zeros(a.ntest, 0, dtype=f64),
                    'lds_left_out': [dict(mask=m, actual=v, grad_norm=g) for m, v, g in lo],
                    'arch': [784, 128, 64, 10], 'act': 'tanh', 'title': 'the MNIST MLP 784-128-64-10 (tanh)'}, a.save)
    t0 = time.perf_counter()
    out_of_time = lambda: time.perf_counter() - t0 > a.time_budget
    for k, i in enumerate(idx.tolist()):
        if out_of_time(): break
        keep = torch.arange(a.n) != i
        ri, g, hv, why = refit(net, X[keep], Y[keep], r.w, mu, a.gtol, cycles=a.cycles, deadline=time.perf_counter() + a.refit_cap)
        gns.append(g); hvs.append(hv)
        if not why.startswith('converged'): bad.append((i, why, g))
        done.append(i); loo.append(tl(ri.w) - q0); save()
        print(f"  LOO {k + 1}/{len(idx)}: row {i}, ‖∇‖ {g:.1e}, {hv} HVPs, {why}, {time.perf_counter() - t0:.0f} s", flush=True)
    t_loo = time.perf_counter() - t0
    old = {tuple(m.nonzero().flatten().tolist()): (d0['lds_actual'][:, j], f)
           for f, d0 in zip(a.resume, resumed) for j, m in enumerate(d0['lds_masks'])}
    for k, h in enumerate(halves):
        keep = torch.zeros(a.n, dtype=torch.bool); keep[h] = True
        if (key := tuple(keep.nonzero().flatten().tolist())) in old:
            masks.append(keep); lds_act.append(old[key][0]); save()
            print(f"  LDS {k + 1}/{a.lds}: converged in {old[key][1]} (taken)", flush=True)
            continue
        if k + 1 < a.lds_from or out_of_time(): continue
        rS, g, hv, why = refit(net, X[keep], Y[keep], r.w, mu, a.gtol, lbfgs_first=True, cycles=a.cycles,
                               deadline=time.perf_counter() + a.refit_cap)
        gns.append(g)
        print(f"  LDS {k + 1}/{a.lds}: ‖∇‖ {g:.1e}, {hv} HVPs, {why}, ‖w_S − w̄‖ {float((rS.w - r.w).norm()):.2f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        if not why.startswith('converged'):     # left out of the LDS, but kept in the file (a check of what leaving out does)
            bad.append(('half', why, g)); lo.append((keep, tl(rS.w) - q0, g)); save(); continue
        masks.append(keep); lds_act.append(tl(rS.w) - q0); save()
    t_lds = time.perf_counter() - t0 - t_loo
    if not done and not masks: raise SystemExit(f"no re-training finished within --time-budget {a.time_budget:g} s")
    ok = torch.tensor([i not in {b[0] for b in bad} for i in done], dtype=torch.bool)
    if done:                     # --loo 0: the halves only
        sel, L = torch.tensor(done, dtype=torch.long)[ok], torch.stack(loo, 1)[:, ok]
        pm, am = S[:, sel].mean(0), L.mean(0)
        per_pt = np.nanmean([spearman(S[j, sel], L[j]) for j in range(a.ntest)])
    lds = math.nan
    if masks:
        P_ = S @ (~torch.stack(masks)).T.to(f64)
        lds = np.nanmean([spearman(P_[j], torch.stack(lds_act, 1)[j]) for j in range(a.ntest)])
    print(f"\n### MNIST MLP 784-128-64-10 (tanh, p = {r.p:,}), n = {a.n}, {a.ntest} test images, weight decay μ = {mu:g}: "
          f"LOO and LDS by warm-start Newton re-training\n")
    print(f"w̄ to ‖∇‖ = {gn:.1e} ({t_train:.0f} s); scores for {a.ntest}×{a.n} pairs: {t_s:.1f} s "
          f"({solved}); {len(done)} of {a.loo} LOO in {t_loo:.0f} s "
          f"(median {int(np.median(hvs)) if hvs else 0} HVPs each), {len(masks)} of {a.lds} half-subsets in {t_lds:.0f} s "
          f"(time budget {a.time_budget:g} s); max final ‖∇‖ of the kept re-trainings "
          f"{max([g for g in gns if g <= a.gtol], default=math.nan):.1e}; left out: {bad if bad else 'none'}\n")
    print("| metric | setsens (H + μI, exact solve) |")
    print("|---|---|")
    if prior is not None:
        pm, am = S[:, prior['idx']].mean(0), prior['actual']
        print(f"| LOO, mean test loss: Pearson / Spearman over {len(am)} removals (from --loo-from) | {pearson(pm, am):.4f} / {spearman(pm, am):.4f} |")
    if done:
        print(f"| LOO, mean test loss: Pearson / Spearman over {int(ok.sum())} removals | {pearson(pm, am):.4f} / {spearman(pm, am):.4f} |")
        print(f"| LOO, per test point: Spearman over the removals, mean over {a.ntest} test points | {per_pt:.4f} |")
    print(f"| LDS, per test point (dattri's definition), {len(masks)} random halves | {lds:.4f} |")


if __name__ == '__main__':
    main()
