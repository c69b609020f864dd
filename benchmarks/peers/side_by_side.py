"""Peers side by side on a leave-one-out ground truth written by `benchmarks/attribution.py` part B (MNIST logistic
regression) or by `benchmarks/attribution_mlp.py` (the MNIST MLP at dattri's size, with the LDS too): the same w̄, data
and re-trained changes, read from the --save file. One markdown table.

    .venv/bin/python benchmarks/attribution.py --parts b --n 1000 --ntest 500 --loo 100 --save /tmp/lr_1000.pt
    .venv/bin/python benchmarks/attribution_mlp.py --n 1000 --ntest 50 --loo 50 --lds 50 --save /tmp/mlp_1000.pt
    /work/peers-venv/bin/python benchmarks/peers/side_by_side.py /tmp/lr_1000.pt [--budget 120] [--json rows.json]

Peers run in their own environment (/work/peers-venv, see pydvl_lr.py); they are never runtime dependencies.
Every peer sees the same model (the set-up's `nn.Sequential` at w̄, float64 unless a row says otherwise), the mean
cross-entropy *without* the L2 term (a peer's loss is a function of the outputs; its regularisation/damping adds λI to
the Hessian, so λ = the L2 weight is the exact Hessian of the trained objective), the test images, and scores the
training points (the LOO points; for the MLP every training point, for the LDS). A score is turned into the predicted
change of the mean test loss on removal by averaging over the test points; its sign convention is the peer's (the
'orientation' column says whether it correlates positively with setsens' scores; the Pearson/Spearman/LDS columns use
the score times that orientation, so a convention flip is not counted as an error; the orientation is fixed once per
peer, from its configuration closest to setsens, and applied to all its rows). The best damping is picked from the grid
by the LOO correlation itself (an oracle choice: an upper bound on what tuning buys). Top-10: overlap of the 10 LOO
points with the largest actual increase of the test loss and the 10 largest predicted. LDS (MLP set-ups only):
dattri's linear datamodeling score over the re-trained random halves (`lds_score`). A set-up written with `--loo 0`
(halves only) has no LOO columns: the orientation then comes from the mean score over all training rows against
setsens', and the best damping is picked by the LDS. Peers that form the dense p × p Hessian (dattri's explicit inverse,
captum's naive IF) are not run when it exceeds --max-dense-gb.
--json writes the same rows (and the set-up) as JSON, for the chapter's per-peer figures (`nbs/16_attribution.ipynb`).
"""
import argparse, json, math, os, signal, tempfile, time, warnings
import numpy as np
os.environ.setdefault('TQDM_DISABLE', '1')
import torch
import torch.nn.functional as F
from torch import nn

GRID = [1e-4, 1e-3, 1e-2]


def pearson(a, b):
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def spearman(a, b):
    r = lambda x: np.argsort(np.argsort(np.asarray(x, float)))
    return pearson(r(a), r(b))


def topk(pred, actual, k=10):
    return len(set(np.argsort(-np.asarray(pred))[:k]) & set(np.argsort(-np.asarray(actual))[:k]))/k


class Budget(Exception): pass


def _alarm(*_): raise Budget()


def model_at(w, dtype, arch=(784, 10), act='tanh'):
    """The set-up's model at w̄: nn.Sequential of nn.Linear layers of widths `arch` with `act` between them (784-10:
    logistic regression; wrapped: dattri's EK-FAC and kronfluence look modules up by a non-empty name); w̄ in the
    order of `parameters()`, which is setsens' flat order."""
    layers = []
    for k, (a, b) in enumerate(zip(arch[:-1], arch[1:])):
        if k: layers.append({'tanh': nn.Tanh, 'relu': nn.ReLU}[act]())
        layers.append(nn.Linear(a, b))
    m = nn.Sequential(*layers).to(dtype)
    with torch.no_grad(): torch.nn.utils.vector_to_parameters(w.to(dtype), m.parameters())
    return m


def _model(d, dtype):
    return model_at(d['w'], dtype, tuple(d.get('arch', (784, 10))), d.get('act', 'tanh'))


# -- the peers: each returns the (|idx|,) mean-over-test score -----------------------------------------------------------
def dattri_run(kind, damp, d, dtype=torch.float64):
    from dattri.task import AttributionTask
    from dattri.algorithm.influence_function import (IFAttributorExplicit, IFAttributorCG, IFAttributorLiSSA,
                                                     IFAttributorArnoldi, IFAttributorEKFAC)
    X, Y, Xt, Yt, idx = d['X'].to(dtype), d['Y'], d['Xt'].to(dtype), d['Yt'], d['rows']
    model = _model(d, dtype)
    def loss(params, data):
        x, y = data                                  # .long(): dattri's LiSSA collate casts every data tensor to float
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y.long())
    task = AttributionTask(loss_func=loss, model=model, checkpoints=model.state_dict())
    kw = {} if damp is None else ({'damping': damp} if kind in ('lissa', 'ekfac') else {'regularization': damp})
    cls = {'explicit': IFAttributorExplicit, 'cg': IFAttributorCG, 'lissa': IFAttributorLiSSA,
           'arnoldi': IFAttributorArnoldi, 'ekfac': IFAttributorEKFAC}[kind]
    att = cls(task=task, device='cpu', **kw)
    DL = lambda *t, b: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*t), batch_size=b, shuffle=False)
    att.cache(DL(X, Y, b=len(X)))
    S = att.attribute(DL(X[idx], Y[idx], b=len(idx)), DL(Xt, Yt, b=len(Xt)))          # (|idx|, n_test)
    return S.T.double()


def captum_run(damp, d, proj=None):
    from captum.influence import NaiveInfluenceFunction
    X, Y, Xt, Yt, idx = d['X'], d['Y'], d['Xt'], d['Yt'], d['rows']
    model = _model(d, torch.float64)
    path = os.path.join(tempfile.mkdtemp(), 'ckpt.pt')
    torch.save(model.state_dict(), path)
    def load(m, p):
        m.load_state_dict(torch.load(p, weights_only=True)); return 1.
    kw = {} if damp is None else {'hessian_reg': damp}
    if proj is not None: kw['projection_dim'] = proj
    inf = NaiveInfluenceFunction(model, torch.utils.data.TensorDataset(X[idx], Y[idx]), path, load,
                                 loss_fn=nn.CrossEntropyLoss(reduction='none'), batch_size=len(idx),
                                 hessian_dataset=torch.utils.data.TensorDataset(X, Y),
                                 test_loss_fn=nn.CrossEntropyLoss(reduction='none'), **kw)
    S = inf.influence((Xt, Yt))                                                  # (n_test, |idx|)
    return S.detach().double()


def kronfluence_run(damp, d):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.task import Task
    from kronfluence.arguments import FactorArguments, ScoreArguments
    X, Y, Xt, Yt, idx = d['X'].float(), d['Y'], d['Xt'].float(), d['Yt'], d['rows']
    model = _model(d, torch.float32)
    class T(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            out = model(x)
            if sample:
                with torch.no_grad(): y = torch.multinomial(torch.softmax(out.detach(), -1), 1).flatten()
            return F.cross_entropy(out, y, reduction='sum')
        def compute_measurement(self, batch, model):
            x, y = batch
            return F.cross_entropy(model(x), y, reduction='sum')
    model = prepare_model(model, T())
    out = tempfile.mkdtemp()
    an = Analyzer('lr', model, T(), output_dir=out, disable_tqdm=True, disable_model_save=True)
    an.fit_all_factors('f', torch.utils.data.TensorDataset(X, Y), per_device_batch_size=len(X),
                       factor_args=FactorArguments(strategy='ekfac'), overwrite_output_dir=True)
    sa = ScoreArguments() if damp is None else ScoreArguments(damping_factor=damp)
    an.compute_pairwise_scores('s', 'f', query_dataset=torch.utils.data.TensorDataset(Xt, Yt),
                               train_dataset=torch.utils.data.TensorDataset(X[idx], Y[idx]),
                               per_device_query_batch_size=len(Xt), per_device_train_batch_size=len(idx),
                               score_args=sa, overwrite_output_dir=True)
    S = an.load_pairwise_scores('s')['all_modules']                              # (n_test, |idx|)
    return S.double()


def pydvl_run(damp, d):
    from pydvl.influence.torch import CgInfluence
    from pydvl.influence import InfluenceMode
    X, Y, Xt, Yt, idx = d['X'], d['Y'], d['Xt'], d['Yt'], d['rows']
    model = _model(d, torch.float64)
    kw = {} if damp is None else {'regularization': damp}
    m = CgInfluence(model, F.cross_entropy, **kw).fit(
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=500))
    return m.influences(Xt, Yt, X[idx], Y[idx], mode=InfluenceMode.Up).double()


def lds_score(S, masks, actual):
    """dattri's linear datamodeling score: per test point, Spearman over the subsets between the predicted change
    Σ_{i∉S} S[j, i] (the removed rows' scores) and the re-trained change, averaged over test points. S (n_test, n),
    masks (subsets, n) bool (True: kept), actual (n_test, subsets)."""
    P = S @ (~masks).T.astype(float)                                                # (n_test, subsets)
    return float(np.nanmean([spearman(P[j], actual[j]) for j in range(len(P))]))


def dense_bytes(d):
    "Bytes of a dense p × p float64 Hessian of the set-up's model."
    return 8*d['w'].numel()**2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('path')
    ap.add_argument('--budget', type=int, default=60, help='seconds per configuration')
    ap.add_argument('--only', default='', help='comma-separated method prefixes to run (default: all)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--no-header', action='store_true', help='print only the peer rows (to append a second process)')
    ap.add_argument('--json', default='', help='also write the rows to this JSON file')
    ap.add_argument('--max-dense-gb', type=float, default=4., help='skip the peers that form the dense p × p Hessian when it is larger')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = torch.load(a.path, weights_only=True)
    idx, actual = d['idx'], d['actual'].numpy()
    lds = 'lds_masks' in d                           # an MLP set-up: every training row is scored, for the LDS too
    d['rows'] = torch.arange(len(d['X'])) if lds else idx
    pos = idx.numpy() if lds else np.arange(len(idx))                       # the LOO points among the scored rows
    ours_full = d['ours_full'].numpy() if lds else None
    ours = d['ours'][idx].numpy()
    has_loo = len(idx) > 0                            # False: a halves-only set-up (attribution_mlp.py --loo 0)
    nan = lambda f: (lambda *x: f(*x) if has_loo else math.nan)
    pearson_, spearman_, topk_ = nan(pearson), nan(spearman), nan(topk)
    masks, lds_actual = (d['lds_masks'].numpy(), d['lds_actual'].numpy()) if lds else (None, None)
    lam = float(d['lam'])
    dense = lambda run: run if dense_bytes(d) <= a.max_dense_gb*2**30 else (lambda g: (_ for _ in ()).throw(MemoryError(
        f"not run: its dense {d['w'].numel():,}² Hessian needs {dense_bytes(d)/2**30:.0f} GiB (> --max-dense-gb {a.max_dense_gb:g})")))
    methods = [
        ('dattri IFAttributorExplicit', dense(lambda g: dattri_run('explicit', g, d)), '0', True),
        ('dattri IFAttributorCG', lambda g: dattri_run('cg', g, d), '0 (max_iter 10)', False),
        ('dattri IFAttributorLiSSA (float32: its collate casts to float)', lambda g: dattri_run('lissa', g, d, torch.float32), '0 (depth 5000, scaling 50)', True),
        ('dattri IFAttributorArnoldi (float32: float64 fails inside it)', lambda g: dattri_run('arnoldi', g, d, torch.float32), '0 (proj_dim 100)', True),
        ('dattri IFAttributorEKFAC', lambda g: dattri_run('ekfac', g, d), '0', True),
        ('captum NaiveInfluenceFunction', dense(lambda g: captum_run(g, d)), '1e-6 (projection_dim 50)', True),
        ('kronfluence EK-FAC (float32)', lambda g: kronfluence_run(g, d), 'None (0.1 × mean eigenvalue)', False),
        ('pyDVL CgInfluence', lambda g: pydvl_run(g, d), 'None', False),
    ]
    if a.only: methods = [m for m in methods if any(m[0].startswith(o) for o in a.only.split(','))]
    n = d['X'].shape[0]
    what = d.get('title', 'MNIST logistic regression')
    if not a.no_header:
        print(f"\n### Peers on {what} (n = {n}, p = {d['w'].numel():,}, {len(idx)} re-trained removals"
              + (f", {len(masks)} re-trained random halves" if lds else '') + f", {d['Xt'].shape[0]} test "
              f"images, L2 λ = {lam:g} in the training objective; {a.budget} s per configuration; {a.threads} thread(s))\n")
        print("| method | damping | Pearson vs LOO | Spearman | top-10 overlap | LDS | orientation vs setsens | seconds | note |")
        print("|---|---|---|---|---|---|---|---|---|")
    num = lambda x: None if x is None or not math.isfinite(x) else round(float(x), 6)
    f4 = lambda x: '–' if not math.isfinite(x) else f'{x:.4f}'
    f1 = lambda x: '–' if not math.isfinite(x) else f'{x:.1f}'
    own_lds = lds_score(ours_full, masks, lds_actual) if lds else math.nan
    if not a.no_header: print(f"| setsens influence_scores (H⁺, exact solve) | none (H includes λ) | {f4(pearson_(ours, actual))} | "
          f"{f4(spearman_(ours, actual))} | {f1(topk_(ours, actual))} | {f4(own_lds)} | + | {float(d['ours_seconds']):.1f} | |", flush=True)
    rows = [dict(method='setsens influence_scores (H⁺, exact solve)', config='none (H includes λ)', pearson=num(pearson_(ours, actual)),
                 spearman=num(spearman_(ours, actual)), top10=num(topk_(ours, actual)), lds=num(own_lds), seconds=num(float(d['ours_seconds'])), note='')]
    def record(name, r, lab):
        rows.append(dict(method=name, config=lab, pearson=num(r[1]), spearman=num(r[2]), top10=num(r[3]), lds=num(r[7]), seconds=num(r[5]), note=r[6]))
        if a.json:
            setup = dict(n=n, p=d['w'].numel(), model=what, removals=len(idx), test_images=int(d['Xt'].shape[0]), l2=lam,
                         budget_s=a.budget, threads=a.threads, lds_subsets=len(masks) if lds else 0)
            with open(a.json, 'w') as f: json.dump(dict(setup=setup, rows=rows), f, indent=1, ensure_ascii=False)
    signal.signal(signal.SIGALRM, _alarm)
    for name, run, default, fixed_cost in methods:
        results = []
        for g in [None] + GRID:
            if fixed_cost and results and (results[0][3].startswith('did not finish') or results[0][3].startswith('MemoryError')):
                results.append((g, None, 0., 'skipped: the default did not run, and damping does not change its cost'))
                continue
            t0 = time.perf_counter()
            torch.manual_seed(0)                                          # kronfluence samples labels (true Fisher)
            signal.alarm(a.budget)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    S = run(g).detach().numpy()                           # (n_test, scored rows)
                sec = time.perf_counter() - t0
                if not np.isfinite(S).all(): raise FloatingPointError('non-finite scores')
                results.append((g, S, sec, ''))
            except Budget:
                results.append((g, None, time.perf_counter() - t0, f'did not finish in {a.budget} s'))
            except Exception as e:
                msg = ' '.join(f'{type(e).__name__}: {e}'.split())[:160].replace('|', '/')
                results.append((g, None, time.perf_counter() - t0, msg))
            finally:
                signal.alarm(0)
        # the peer's sign convention, once per peer: from its run that agrees best (in |Pearson|) with setsens
        loo = lambda S: S.mean(0)[pos]                                     # the mean test loss, at the LOO points
        ref, at = (ours, loo) if has_loo else (ours_full.mean(0), lambda S: S.mean(0))   # halves only: every training row
        ran = [r for r in results if r[1] is not None]
        o = 0. if not ran else (1. if pearson(at(max(ran, key=lambda r: abs(pearson(at(r[1]), ref)))[1]), ref) >= 0 else -1.)
        results = [(g, math.nan, math.nan, math.nan, 0, sec, note, math.nan) if S is None else
                   (g, pearson_(o*loo(S), actual), spearman_(o*loo(S), actual), topk_(o*loo(S), actual), o, sec, note,
                    lds_score(o*S, masks, lds_actual) if lds else math.nan)
                   for g, S, sec, note in results]
        def show(r, lab):
            print(f"| {name} | {lab} | {f4(r[1])} | {f4(r[2])} | {f1(r[3])} | {f4(r[7])} | {'+' if r[4] > 0 else ('−' if r[4] < 0 else '–')} | "
                  f"{r[5]:.1f} | {r[6]} |", flush=True)
            record(name, r, lab)
        show(results[0], f'default {default}')
        by = 1 if has_loo else 7                                           # pick the best damping by LOO Pearson, else by LDS
        ok = [r for r in results[1:] if math.isfinite(r[by])]
        if ok:
            best = max(ok, key=lambda r: r[by])
            show(best, f'best of grid {GRID}: {best[0]:g}')
        else:
            notes = sorted({r[6] for r in results[1:]})
            print(f"| {name} | grid {GRID} | – | – | – | – | – | – | no grid value ran: {'; '.join(notes)[:200]} |", flush=True)
            record(name, (None, None, None, None, 0, None, f"no grid value ran: {'; '.join(notes)[:200]}", None), f'grid {GRID}')


if __name__ == '__main__':
    main()
