#!/usr/bin/env python
"""One prepared GPU run of the engine (issue 17): a single command, one markdown table, under 8 minutes on one H100/H200.

    python benchmarks/gpu_suite.py [--device cuda] [--out gpu_suite.md] [--budget 480]
    python benchmarks/gpu_suite.py --dry-run           # the same code paths at toy sizes on CPU (CI runs this)

Sections, each measured side by side in one process (contenders interleaved, medians of repetitions):

1. **HVP / gradient**, the real pretrained ResNet-56 on 128 and 1,024 real CIFAR-10 images (float32): one gradient
   (`Risk.grad` and plain autograd), one HVP per `Risk.hvp_mode`, plain torch double backward, curvlinops'
   `HessianLinearOperator` when installed, and the default one call and in a solve without `FastSecondOrder`
   (PyTorch's own double backward; chapter 06a: does the mode pay on this device?); time, ratio to one gradient, peak
   device memory above the loaded model.
2. **k right-hand sides**: `Risk(vectorize=True)` (vmap over the k columns) against a loop, per mode, per column.
3. **Table 1 at the paper's size**: 1,000 images, |K| = 1 and 10 perturbed along their input gradients to the paper's
   perturbed losses (0.0041, 0.0045), one batched MINRES solve (100 iterations): iterations, status, relative residual,
   and the mean loss on the perturbed points at w̄ and at w̄ + Δw for both weightings (paper 1, Table 1).
4. **`pinv_solve` at dattri's MLP size** (`benchmarks/pinv_large.py`'s problem: 784-128-64-10 tanh, p = 109,386, float64,
   1,000 MNIST images, 20 test-loss gradients, damping 1e-2): the block and the per-column Lanczos solve, wall time, the
   part spent in HVPs, HVP columns, status and the normal residual, and the two solutions' agreement.
5. **The notebooks' `#| gpu` cells**: every notebook with such a cell, run by `nbdev_test --flags gpu --path ...`
   within what is left of the time budget (`--dry-run` lists them without running them).
6. **`torch.compile` of the HVP** (`benchmarks/hvp_compile.py`, if budget is left): the forward-over-reverse and the
   reverse-over-reverse product on 128 images compiled by Inductor, against the eager default as one call and as
   replayed in a solve. On CPU, compiling did not pay (chapter 07); this asks the same of the GPU. `--dry-run` runs the
   eager rows at toy size and compiles nothing (a compile takes minutes).

Every section checks its own numbers (finite, the solver's residual reported, HVP modes agreeing to float32 rounding)
and a failed section is a row saying why, not a crash; the exit status is non-zero if any section failed.
"""
import argparse, os, platform, re, statistics, subprocess, sys, time, traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT/'benchmarks'))
from hvp import pytorch_double_backward                                                       # noqa: E402  (the ablation's switch)
from setsens.risk import Risk                                                                 # noqa: E402


# ------------------------------------------------------------------------------------------------------- sizes
FULL = dict(hvp_n=(128, 1024), hvp_bs=256, reps=5, k=8, k_n=128, k_reps=3, t1_n=1000, t1_rows=(1, 10),
            t1_targets=(0.0041, 0.0045), t1_maxiter=100, t1_bs=250, pinv_n=1000, pinv_k=20, pinv_iters=300, pinv_maxiter=None)
DRY = dict(hvp_n=(4, 8), hvp_bs=4, reps=1, k=2, k_n=4, k_reps=1, t1_n=8, t1_rows=(1, 2),
           t1_targets=(0.0041, 0.0045), t1_maxiter=3, t1_bs=8, pinv_n=8, pinv_k=2, pinv_iters=5, pinv_maxiter=20)


def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def _peak_reset(dev):
    if dev.type == 'cuda':
        _sync(dev); torch.cuda.reset_peak_memory_stats(dev); return torch.cuda.memory_allocated(dev)
    return 0


def _peak_mib(dev, base):
    return (torch.cuda.max_memory_allocated(dev) - base)/2**20 if dev.type == 'cuda' else float('nan')


def timed(contenders: dict, reps: int, dev) -> dict:
    "Interleaved repetitions after one warm-up each: {name: (median seconds, peak MiB of the warm-up call)}."
    peak = {}
    for k, f in contenders.items():
        base = _peak_reset(dev); f(); _sync(dev); peak[k] = _peak_mib(dev, base)
    T = {k: [] for k in contenders}
    for _ in range(reps):
        for k, f in contenders.items():
            _sync(dev); t0 = time.perf_counter(); f(); _sync(dev); T[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), peak[k]) for k, v in T.items()}


def load_pretrained_like(model, dtype):
    "A copy of `model` in `dtype` (the float64 oracle)."
    import copy
    return copy.deepcopy(model).to(dtype)


def load(n, dev):
    from setsens.cifar import load_pretrained, cifar10
    model = load_pretrained(arch='resnet56', device=dev)
    X, Y = cifar10(split='train', n=n, device=dev)
    return model, X, Y


# ------------------------------------------------------------------------------------------------------- sections
def hvp_section(S, dev, md):
    md.append("## 1. One HVP in units of one gradient (ResNet-56, real CIFAR-10, float32)\n")
    md.append("| images | contender | seconds | / gradient | peak MiB | check |")
    md.append("|---|---|---|---|---|---|")
    for n in S['hvp_n']:
        model, X, Y = load(n, dev)
        bs = S['hvp_bs'] if n > S['hvp_bs'] else None
        r0 = Risk(model, 'cross_entropy', X, Y, batch_size=bs)
        v = torch.randn(r0.p, generator=torch.Generator().manual_seed(0)).to(dev)
        params = [p for p in model.parameters() if p.requires_grad]
        risks = {m: Risk(model, 'cross_entropy', X, Y, batch_size=bs, hvp_mode=m) for m in Risk.MODES}

        def plain_grad():
            return torch.autograd.grad(F.cross_entropy(model(X), Y), params)

        def plain_hvp():                                    # double backward on the whole batch, by hand
            g = torch.autograd.grad(F.cross_entropy(model(X), Y), params, create_graph=True)
            vs = torch.split(v, [p.numel() for p in params])
            return torch.autograd.grad(sum((gi*vi.view_as(gi)).sum() for gi, vi in zip(g, vs)), params)

        C = {'gradient (Risk.grad)': r0.grad, 'gradient (plain autograd)': plain_grad}
        C.update({f'HVP {m}': (lambda r=r: r.hvp(v)) for m, r in risks.items()})
        C['HVP plain double backward (unchunked)'] = plain_hvp
        # the default mode as a solve takes its products: inside risk.reusing() the first one records the chunks'
        # graphs (graph_cache: by default a quarter of the free device memory) and later ones start from them
        rs = Risk(model, 'cross_entropy', X, Y, batch_size=bs)
        reuse = rs.reusing(); reuse.__enter__(); rs.hvp(v)
        solve = f'HVP rev_rev in a solve (risk.reusing(); {len(rs._cache)} of {-(-n//(bs or n))} chunk graphs kept)'
        C[solve] = lambda: rs.hvp(v)
        # ablation: the products recorded without FastSecondOrder (PyTorch's own double backward of convolutions and
        # BatchNorm; chapter 06a): does the mode pay on this device too?
        pt_one, pt_solve = 'HVP rev_rev, no FastSecondOrder (ablation)', 'HVP rev_rev in a solve, no FastSecondOrder (ablation)'
        def pt_one_hvp():
            with pytorch_double_backward(): return r0.hvp(v)
        C[pt_one] = pt_one_hvp
        rs_pt = Risk(model, 'cross_entropy', X, Y, batch_size=bs)
        reuse_pt = rs_pt.reusing(); reuse_pt.__enter__()
        with pytorch_double_backward(): rs_pt.hvp(v)          # records the kept graphs without the mode
        C[pt_solve] = lambda: rs_pt.hvp(v)
        # the oracle: the same HVP in float64 (float32 HVPs at a minimum lose digits to cancellation: each
        # contender's error against it is reported, and none may be far worse than the default mode's)
        m64 = load_pretrained_like(model, torch.float64)
        ref = Risk(m64, 'cross_entropy', X.double(), Y, batch_size=bs).hvp(v.double())
        err = lambda h: float((h.double() - ref).norm()/ref.norm())
        checks = {f'HVP {m}': err(r.hvp(v)) for m, r in risks.items()}
        checks['HVP plain double backward (unchunked)'] = err(torch.cat([t.reshape(-1) for t in plain_hvp()]))
        checks[solve] = err(rs.hvp(v))
        checks[pt_one], checks[pt_solve] = err(C[pt_one]()), err(rs_pt.hvp(v))
        del m64
        try:
            from curvlinops import HessianLinearOperator
            H = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params,
                                      [(X[i:i + (bs or n)], Y[i:i + (bs or n)]) for i in range(0, n, bs or n)],
                                      check_deterministic=False)
            C['curvlinops HessianLinearOperator @ v'] = lambda: H @ v
            checks['curvlinops HessianLinearOperator @ v'] = err(H @ v)
        except ImportError:
            md.append(f"| {n} | curvlinops | – | – | – | not installed (`pip install curvlinops-for-pytorch`) |")
        tol = max(10*checks['HVP rev_rev'], 1e-4)
        bad = {k: e for k, e in checks.items() if not e <= tol}
        if bad: raise AssertionError(f"HVPs off the float64 oracle by more than 10x the default mode's error ({tol:.1e}): {bad}")
        res = timed(C, S['reps'], dev)
        g = res['gradient (Risk.grad)'][0]
        for k, (t, pk) in res.items():
            note = f"rel. error vs float64 {checks[k]:.1e}" if k in checks else ''
            mem = f"{pk:.0f}" if pk == pk else '–'             # no device allocator statistics on CPU
            md.append(f"| {n}{'' if bs is None else f' (chunks of {bs})'} | {k} | {t:.4f} | {t/g:.2f} | {mem} | {note} |")
        reuse.__exit__(None, None, None); reuse_pt.__exit__(None, None, None)
        del risks, C, rs, rs_pt
    md.append("")


def rhs_section(S, dev, md):
    md.append(f"## 2. k = {S['k']} right-hand sides: vmap against a loop (seconds per column)\n")
    md.append("| hvp_mode | vmap s/col | loop s/col | vmap / loop |")
    md.append("|---|---|---|---|")
    model, X, Y = load(S['k_n'], dev)
    p = Risk(model, 'cross_entropy', X, Y).p
    V = torch.randn(p, S['k'], generator=torch.Generator().manual_seed(1)).to(dev)
    C = {(m, vec): (lambda r=Risk(model, 'cross_entropy', X, Y, hvp_mode=m, vectorize=vec): r.hvp(V))
         for m in Risk.MODES for vec in (True, False)}
    a, b = C[('rev_rev', True)](), C[('rev_rev', False)]()
    if not float((a - b).norm()/b.norm()) < 1e-4: raise AssertionError("vmap and loop HVPs disagree")
    res = timed(C, S['k_reps'], dev)
    for m in Risk.MODES:
        tv, tl = res[(m, True)][0]/S['k'], res[(m, False)][0]/S['k']
        md.append(f"| {m} | {tv:.4f} | {tl:.4f} | {tv/tl:.2f} |")
    md.append("")


def table1_section(S, dev, md):
    from setsens.poisoning import margin_cross_entropy, poison
    from setsens.resnet_study import table1_shifts, row_losses
    n = S['t1_n']
    md.append(f"## 3. Table 1 at n = {n} images (paper size: 1,000), one batched MINRES solve\n")
    model, X, Y = load(n, dev)
    bs = S['t1_bs']
    risk = Risk(model, margin_cross_entropy, X, Y, batch_size=bs)
    rows = [poison(model, X, Y, range(k), target=t, batch_size=bs) for k, t in zip(S['t1_rows'], S['t1_targets'])]
    t0 = time.perf_counter()
    T = table1_shifts(risk, rows, maxiter=S['t1_maxiter'], batch_size=bs, track=False)
    _sync(dev); secs = time.perf_counter() - t0
    info = T['info']
    md.append(f"MINRES: {info.iterations} iterations, {info.matvecs} HVP blocks, status `{info.status}`, "
              f"{secs:.1f} s on {dev.type}.\n")
    md.append("| \\|K\\| | δ | rel. residual | loss on K at w̄ | at w̄ + Δw (mean) | at w̄ + Δw (eq. 14) | ‖Δw‖ (eq. 14) |")
    md.append("|---|---|---|---|---|---|---|")
    for j, P in enumerate(rows):
        L = row_losses(model, risk.w, X, Y, P, {'eq14': T['dw_eq14'][:, j], 'mean': T['dw_mean'][:, j]}, bs)
        vals = [L['w_bar']['perturbed'], L['mean']['perturbed'], L['eq14']['perturbed'], L['eq14']['norm']]
        if not all(map(lambda x: x == x and abs(x) < float('inf'), vals)): raise AssertionError(f"row {j}: non-finite {vals}")
        rr = T['rel_residual'][j] if T['rel_residual'].ndim else T['rel_residual']
        md.append(f"| {len(P.idx)} | {P.delta:.3g} | {float(rr):.2e} | {vals[0]:.5f} | {vals[1]:.5f} | {vals[2]:.5f} | {vals[3]:.3g} |")
    md.append("")


def _gpu_notebooks():
    "Notebooks with at least one code cell flagged `#| gpu`."
    import json
    found = []
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        if any(c['cell_type'] == 'code' and re.search(r'^#\|\s*gpu\b', ''.join(c['source']), re.M) for c in cells):
            found.append(nb)
    return found


def gpu_cells_section(S, dev, md, dry, deadline):
    md.append("## 5. The notebooks' `#| gpu` cells\n")
    nbs = _gpu_notebooks()
    if not nbs:
        md.append("No notebook has a `#| gpu` cell.\n"); return
    md.append("| notebook | result | seconds |")
    md.append("|---|---|---|")
    failed = []
    for nb in nbs:
        rel = nb.relative_to(ROOT)
        left = deadline - time.perf_counter()
        if dry: md.append(f"| {rel} | listed (dry run: not executed) | – |"); continue
        if left < 30: md.append(f"| {rel} | skipped: {left:.0f} s of the budget left | – |"); continue
        t0 = time.perf_counter()
        try:
            r = subprocess.run(['nbdev_test', '--flags', 'gpu', '--path', str(rel)], cwd=ROOT, capture_output=True,
                               text=True, timeout=left)
            ok = r.returncode == 0
            tail = '' if ok else (r.stdout + r.stderr).strip().splitlines()[-1][:120].replace('|', '\\|')
            md.append(f"| {rel} | {'passed' if ok else 'FAILED: ' + tail} | {time.perf_counter() - t0:.0f} |")
            if not ok: failed.append(str(rel))
        except subprocess.TimeoutExpired:
            md.append(f"| {rel} | stopped at the time budget | {time.perf_counter() - t0:.0f} |"); failed.append(str(rel))
    md.append("")
    if failed: raise AssertionError(f"gpu cells failed: {failed}")


def compile_section(S, dev, md, dry):
    import contextlib, importlib.util, io
    spec = importlib.util.spec_from_file_location('hvp_compile_bench', ROOT/'benchmarks'/'hvp_compile.py')
    hc = importlib.util.module_from_spec(spec); spec.loader.exec_module(hc)
    md.append("## 6. `torch.compile` of the HVP\n")
    args = ['--device', str(dev), '--n', str(S['k_n']), '--reps', str(S['k_reps'])]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): hc.main(args + (['--modes'] if dry else ['--modes', 'fwd_rev', 'rev_rev']))
    md.append(buf.getvalue() + ("\n(dry run: nothing compiled)\n" if dry else ""))


def pinv_section(S, dev, md):
    import importlib.util
    spec = importlib.util.spec_from_file_location('pinv_large_bench', ROOT/'benchmarks'/'pinv_large.py')
    pl = importlib.util.module_from_spec(spec); spec.loader.exec_module(pl)
    import setsens.pinv as pinv
    n, k, mu = S['pinv_n'], S['pinv_k'], 1e-2
    risk, B, gn = pl.problem(n, k, mu, S['pinv_iters'], device=dev)
    md.append(f"## 4. `pinv_solve` at dattri's MLP size: p = {risk.p:,}, n = {n}, k = {k}, float64, damping {mu:g}\n")
    md.append(f"‖∇R + μw‖ = {gn:.1e} after {S['pinv_iters']} L-BFGS iterations.\n")
    md.append("| method | wall s | in HVPs s | HVP columns | status | max normres |")
    md.append("|---|---|---|---|---|---|")
    X = {}
    for method in ('block', 'lanczos'):
        _sync(dev)
        wall, hv, nh, info, X[method] = pl.timed(pinv, risk, B, mu, method, 16., S['pinv_maxiter'])   # dry run: 20 steps
        if not bool(torch.isfinite(X[method]).all()): raise AssertionError(f"{method}: non-finite solution")
        md.append(f"| {method} | {wall:.1f} | {hv:.1f} | {nh} | {info.status} | {float(info.normres.max()):.1e} |")
    d = float((X['block'] - X['lanczos']).norm()/X['lanczos'].norm())
    md.append(f"\n‖X_block − X_lanczos‖/‖X_lanczos‖ = {d:.1e}.\n")
    if S['pinv_maxiter'] is None and not d < 1e-6: raise AssertionError(f"block and lanczos solutions differ by {d:.1e}")


# ------------------------------------------------------------------------------------------------------- driver
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default=None, help="default: cuda when available, else cpu")
    ap.add_argument('--dry-run', action='store_true', help='toy sizes, CPU, gpu cells listed not run (for CI)')
    ap.add_argument('--out', default=None, help='markdown file to write (default: $OUT/gpu_suite.md or ./gpu_suite.md)')
    ap.add_argument('--budget', type=float, default=480., help='seconds; sections that would start after it are skipped')
    ap.add_argument('--only', nargs='*', default=None, help='section numbers to run (1-6)')
    a = ap.parse_args(argv)
    dev = torch.device(a.device or ('cpu' if a.dry_run or not torch.cuda.is_available() else 'cuda'))
    if dev.type == 'cuda' and not torch.cuda.is_available(): ap.error("--device cuda: CUDA is not available here")
    S = DRY if a.dry_run else FULL
    if dev.type == 'cpu': torch.set_num_threads(min(torch.get_num_threads(), 2))
    t_start = time.perf_counter(); deadline = t_start + a.budget
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'CPU'
    md = [f"# setsens GPU suite{' (dry run, toy sizes)' if a.dry_run else ''}\n",
          f"Device: {dev.type} ({name}); torch {torch.__version__}; float32; sizes {S}.\n"]
    sections = [('1', hvp_section), ('2', rhs_section), ('3', table1_section),
                ('4', pinv_section), ('5', lambda S, dev, md: gpu_cells_section(S, dev, md, a.dry_run, deadline)),
                ('6', lambda S, dev, md: compile_section(S, dev, md, a.dry_run))]
    failed = []
    for key, fn in sections:
        if a.only and key not in a.only: continue
        if time.perf_counter() > deadline:
            md.append(f"## {key}. skipped: the {a.budget:.0f} s budget is spent\n"); continue
        t0 = time.perf_counter()
        print(f"# section {key} ...", file=sys.stderr, flush=True)
        try:
            fn(S, dev, md)
        except Exception as e:                                   # a failed section is a row, and a non-zero exit
            failed.append(key)
            md.append(f"**Section {key} failed**: `{type(e).__name__}: {str(e)[:300]}`\n")
            traceback.print_exc()
        md.append(f"_(section {key}: {time.perf_counter() - t0:.1f} s)_\n")
    md.append(f"Total: {time.perf_counter() - t_start:.0f} s; failed sections: {failed or 'none'}.")
    text = '\n'.join(md)
    print(text)
    out = Path(a.out) if a.out else Path(os.environ.get('OUT', '.'))/'gpu_suite.md'
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + '.tmp'); tmp.write_text(text + '\n'); os.replace(tmp, out)
    print(f"# wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
