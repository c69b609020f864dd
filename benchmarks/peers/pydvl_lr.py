"""pyDVL influence (DirectInfluence, CgInfluence) on the MNIST logistic-regression leave-one-out problem of
`benchmarks/attribution.py` part B: same w̄, same data, same re-trained ground truth, read from its --save file.

Run in a separate environment that reuses the project's torch (never install peers into the project's .venv):
    python3 -m venv /work/peers-venv
    echo "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')" > /work/peers-venv/lib/python3.*/site-packages/main.pth
    /work/peers-venv/bin/pip install --no-deps pydvl   (then its light dependencies one by one, see the report)
    .venv/bin/python benchmarks/attribution.py --parts b --save /tmp/lr_loo.pt
    /work/peers-venv/bin/python benchmarks/peers/pydvl_lr.py /tmp/lr_loo.pt [seconds per method, default 300]

pyDVL's loss is a function of (output, target), so the L2 term cannot be in it; its `regularization=λ` adds λI to the
Hessian instead, which for λ = the L2 weight is exactly our H. The per-example gradients then lack the λw term, which
shifts every training point's score by the same constant (Σ_i ∇ℓ_i = 0 at w̄): correlations are unaffected.
The query is the mean test loss: the mean over test rows of pyDVL's per-test-row influence matrix.
"""
import signal, sys, time, warnings
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def pearson(a, b):
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def spearman(a, b):
    r = lambda x: np.argsort(np.argsort(np.asarray(x, float)))
    return pearson(r(a), r(b))


class Budget(Exception): pass


def _alarm(*_): raise Budget()


def main(path, budget=300, threads=1):
    torch.set_num_threads(threads)
    from pydvl.influence.torch import DirectInfluence, CgInfluence
    from pydvl.influence import InfluenceMode
    d = torch.load(path, weights_only=True)
    X, Y, Xt, Yt, w, lam, idx, actual = (d[k] for k in ('X', 'Y', 'Xt', 'Yt', 'w', 'lam', 'idx', 'actual'))
    n = X.shape[0]
    model = nn.Linear(784, 10).double()
    with torch.no_grad():
        model.weight.copy_(w[:7840].view(10, 784)); model.bias.copy_(w[7840:])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=500)
    ours = d['ours'][idx].numpy()
    rows = [('setsens influence_scores (H⁺, exact)', 'none needed', pearson(ours, actual), spearman(ours, actual),
             pearson(ours, d['ours'][idx]), d['ours_seconds'], '')]
    configs = [('pyDVL DirectInfluence', DirectInfluence, {}, 'default (None)'),
               ('pyDVL DirectInfluence', DirectInfluence, {'regularization': float(lam)}, f'{lam:g} (= the L2: exact H)'),
               ('pyDVL CgInfluence', CgInfluence, {}, 'default (None)'),
               ('pyDVL CgInfluence', CgInfluence, {'regularization': float(lam)}, f'{lam:g} (= the L2: exact H)')]
    print(f"\n### Peers on MNIST logistic regression LOO (n = {n}, {len(idx)} removed points, {Xt.shape[0]} test images; "
          f"{budget} s per method)\n")
    print("| method | damping | Pearson vs re-training | Spearman | Pearson vs setsens | seconds | note |")
    print("|---|---|---|---|---|---|---|")
    show = lambda r: print(f"| {r[0]} | {r[1]} | {r[2]:.4f} | {r[3]:.4f} | {r[4]:.4f} | {r[5]:.2f} | {r[6]} |", flush=True)
    show(rows[0])
    signal.signal(signal.SIGALRM, _alarm)
    for name, cls, kw, lab in configs:
        note = ''
        t0 = time.perf_counter()
        signal.alarm(budget)
        try:
            with warnings.catch_warnings(record=True) as ws:
                warnings.simplefilter('always')
                m = cls(model, F.cross_entropy, **kw).fit(loader)
                # the mean test loss's influence: the mean over test rows of the per-row influences, for the LOO points
                I = m.influences(Xt, Yt, X[idx], Y[idx], mode=InfluenceMode.Up)          # (n_test, |idx|)
            sec = time.perf_counter() - t0
            # pyDVL's "up" influence is ⟨H⁻¹∇ℓ_test, ∇ℓ_i⟩ (no minus sign), so the predicted change on removal,
            # s∇qᵀH⁻¹∇ℓ_i with s = 1/n, is +(1/n)·(its mean over the test rows)
            pred = (I.mean(0)/n).detach().numpy()
            if any('max' in str(x.message).lower() or 'converge' in str(x.message).lower() for x in ws):
                note = 'warned: ' + str([str(x.message)[:60] for x in ws][:1])
            if not np.isfinite(pred).all(): note += ' non-finite scores'
            sgn = np.sign(pearson(pred, ours)) if np.isfinite(pred).all() else 1
            rows.append((name, lab, pearson(pred, actual), spearman(pred, actual), pearson(pred, ours), sec,
                         note + ('' if sgn > 0 else ' (sign convention flipped)')))
        except Budget:
            rows.append((name, lab, float('nan'), float('nan'), float('nan'), time.perf_counter() - t0,
                         f'did not finish within the {budget} s budget'))
        except Exception as e:
            rows.append((name, lab, float('nan'), float('nan'), float('nan'), time.perf_counter() - t0,
                         f'{type(e).__name__}: {str(e)[:80]}'))
        finally:
            signal.alarm(0)
        show(rows[-1])


if __name__ == '__main__':
    main(sys.argv[1], *(int(v) for v in sys.argv[2:3]))
