"""Hessian-vector products of setsens.risk.Risk on the real pretrained ResNet-56 and real CIFAR-10 images.

Prints one table of ratios, measured side by side in one run (contenders interleaved, repeated, medians):
  * time of one gradient, of one HVP in each `hvp_mode` (and two ablations: eval-mode BatchNorm written as
    an explicit affine map, not folded into the convolution; products recorded without `FastSecondOrder`, with
    PyTorch's own double backward), of curvlinops' `HessianLinearOperator` matvec and (--linearize) of a
    `torch.func.linearize`d gradient; the mixed products J ΔX and Jᵀ u against one HVP;
  * k = 4 right-hand sides at once (vmap) vs a loop, per hvp_mode;
  * the default mode as a solve takes its products: inside `risk.reusing()`, where the first product records the
    chunks' graphs (while they fit `graph_cache`) and later ones start from them;
  * peak memory and time of an HVP over 256 to 4096 images with `batch_size=64` vs unchunked, one product and two
    inside `risk.reusing()` (each configuration in a fresh subprocess; on CPU the peak resident set size above the
    baseline).

Usage:  .venv/bin/python benchmarks/hvp.py [--n 128] [--reps 5] [--threads 1] [--device cpu] [--linearize]
                                           [--k 4] [--k-reps 3] [--mem-n 256 1024 4096] [--unchunked-max 256] [--lean]
Needs `curvlinops-for-pytorch` for the curvlinops row (skipped with a note when missing).
Times are quoted both as process CPU time (robust on a shared machine) and wall-clock time.
"""
import argparse, contextlib, json, os, resource, statistics, subprocess, sys, time
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from setsens.risk import Risk
import setsens.risk as _sr
from setsens.core import AffineBatchNorm


# ----------------------------------------------------------------------------------------- model and data
def load(n, device, dtype=torch.float32):
    "The pretrained ResNet-56 (eval mode) and the first n real CIFAR-10 training images."
    try:
        from setsens.cifar import load_pretrained, cifar10
        model = load_pretrained(arch='resnet56', device=device, dtype=dtype)
        X, Y = cifar10(split='train', n=n, device=device, dtype=dtype)
        return model, X, Y, 'setsens.cifar'
    except ImportError:
        return (*_local_load(n, device, dtype), 'local loader')


def _local_load(n, device, dtype):
    "Fallback when setsens.cifar is unavailable: option-A CIFAR ResNet-56 + the shared CIFAR-10 subset."
    import numpy as np
    from torch import nn
    from setsens.core import data_dir
    class Block(nn.Module):
        def __init__(s, cin, c, stride):
            super().__init__()
            s.conv1, s.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
            s.conv2, s.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            s.pad, s.stride = (c - cin)//2, stride
        def forward(s, x):
            o = s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x)))))
            sc = x if s.pad == 0 and s.stride == 1 else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, s.pad, s.pad))
            return F.relu(o + sc)
    class Net(nn.Module):
        def __init__(s):
            super().__init__()
            s.conv1, s.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            c, layers = 16, []
            for planes, stride in [(16, 1), (32, 2), (64, 2)]:
                layers.append(nn.Sequential(*[Block(c if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(9)]))
                c = planes
            s.layer1, s.layer2, s.layer3 = layers
            s.linear = nn.Linear(64, 10)
        def forward(s, x):
            o = s.layer3(s.layer2(s.layer1(F.relu(s.bn1(s.conv1(x))))))
            return s.linear(o.mean((2, 3)))
    d = data_dir()
    sd = torch.load(d/'resnet56-4bfd9763.th', map_location='cpu', weights_only=True)['state_dict']
    model = Net(); model.load_state_dict({k.removeprefix('module.'): v for k, v in sd.items()})
    with np.load(d/'cifar10_subset.npz') as f: x, y = f['x_train'][:n], f['y_train'][:n]
    X = torch.tensor(x).permute(0, 3, 1, 2).to(dtype)/255
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=dtype).view(1, 3, 1, 1)
    return model.to(device=device, dtype=dtype).eval(), ((X - mean)/std).to(device), torch.tensor(y).to(device)


EvalBatchNormAsAffine = AffineBatchNorm   # the ablation's mode is the library's (setsens.core), applied to every evaluation


@contextlib.contextmanager
def pytorch_double_backward():
    "Ablation: products recorded without `FastSecondOrder` (PyTorch's own double backward of convolutions and BatchNorm, as before it)."
    saved = _sr.FastSecondOrder; _sr.FastSecondOrder = contextlib.nullcontext
    try: yield
    finally: _sr.FastSecondOrder = saved


def _pt(f):
    "f, run under `pytorch_double_backward()`."
    def g():
        with pytorch_double_backward(): return f()
    return g


class AffineBNRisk(Risk):
    "Ablation: a Risk whose model runs under EvalBatchNormAsAffine (cheaper-looking second derivatives of BatchNorm)."
    def _fsum(self, w, Xc, Yc):
        with EvalBatchNormAsAffine(): return super()._fsum(w, Xc, Yc)


def _sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------- timing
def timing(args):
    device = args.device
    model, X, Y, how = load(args.n, device)
    print(f"# ResNet-56 ({how}), {args.n} real CIFAR-10 training images, {device}, float32, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if device == 'cpu':
        print(f"# machine: {os.cpu_count()} CPU cores shared with other workers "
              f"(load average {os.getloadavg()[0]:.1f}); CPU-time medians are the robust numbers")
    risks = {(m, a): (AffineBNRisk if a else Risk)(model, 'cross_entropy', X, Y, hvp_mode=m)
             for m in Risk.MODES for a in (False, True) if not (args.lean and (a or m == 'fwd_rev'))}
    _bn = lambda m, a: 'BatchNorm as x*s + t, not folded (ablation)' if a else 'default'

    r0 = Risk(model, 'cross_entropy', X, Y)
    print(f"# p = {r0.p} parameters")
    g = torch.Generator(device='cpu').manual_seed(0)
    v = torch.randn(r0.p, generator=g).to(device)
    params = [p for p in model.parameters()]

    def autograd_grad():
        return torch.autograd.grad(F.cross_entropy(model(X), Y), params)

    contenders = {'gradient (Risk.grad)': r0.grad, 'gradient (plain autograd)': autograd_grad}
    for (m, a), r in risks.items():
        contenders[f"HVP {m}, {_bn(m, a)}"] = (lambda r=r: r.hvp(v))
    notes, setup = {}, {}
    # the default mode as a solve uses it: inside risk.reusing() (what minres/pinv_solve/lanczos enter), the chunks'
    # graphs are kept while they fit graph_cache (default 2 GiB); the first product records them (timed as set-up)
    rs = Risk(model, 'cross_entropy', X, Y, batch_size=args.solve_bs)
    reuse = rs.reusing(); reuse.__enter__()        # held open for the whole run: every timed product is "in the solve"
    room0 = rs._room                               # the default graph_cache: 2 GiB, on CUDA a quarter of the free memory
    solve_row = f"HVP rev_rev, default, in a solve (risk.reusing(), graph_cache {room0/2**30:.3g} GiB, batch_size {args.solve_bs})"
    c0, t0 = time.process_time(), time.perf_counter(); rs.hvp(v); _sync(device)
    setup[solve_row] = (time.process_time() - c0, time.perf_counter() - t0)
    nchunks = len(range(0, args.n, args.solve_bs or args.n))
    notes[solve_row] = (f"{len(rs._cache)} of {nchunks} chunk graphs kept, counted {(room0 - rs._room)/2**20:.0f} MiB"
                        if rs._room else f"{len(rs._cache)} of {nchunks} chunk graphs kept (the next did not fit)")
    contenders[solve_row] = lambda: rs.hvp(v)
    # issue 17's FastSecondOrder, ablated: the same products with PyTorch's own double backward (as before the change)
    pt_one, pt_solve = (f"HVP rev_rev, {w}, PyTorch's double backward (ablation: no FastSecondOrder)" for w in ('one call', 'in a solve'))
    contenders[pt_one] = _pt(lambda: r0.hvp(v))
    rs_pt = Risk(model, 'cross_entropy', X, Y, batch_size=args.solve_bs)
    reuse_pt = rs_pt.reusing(); reuse_pt.__enter__()
    c0, t0 = time.process_time(), time.perf_counter(); _pt(lambda: rs_pt.hvp(v))(); _sync(device)
    setup[pt_solve] = (time.process_time() - c0, time.perf_counter() - t0)
    notes[pt_solve] = f"{len(rs_pt._cache)} of {nchunks} chunk graphs kept, counted {(room0 - rs_pt._room)/2**20:.0f} MiB"
    contenders[pt_solve] = lambda: rs_pt.hvp(v)
    # the mixed products (issue 17: ≤ 1.5× an HVP), default mode: J ΔX with every row perturbed, and Jᵀ u
    dX, u = torch.randn(X.shape, generator=g).to(device), torch.randn(r0.p, generator=g).to(device)
    mixed = {'J ΔX (Risk.jx, every row perturbed)': lambda: r0.jx(dX), 'Jᵀ u (Risk.jxT)': lambda: r0.jxT(u)}
    contenders.update(mixed)
    for (m, a), r in risks.items():      # the cached mode builds its graph on the first call: time it separately
        if m == 'rev_rev_cached':
            c0, t0 = time.process_time(), time.perf_counter(); r.hvp(v); _sync(device)
            setup[f"HVP {m}, {_bn(m, a)}"] = (time.process_time() - c0, time.perf_counter() - t0)
    ref = r0.hvp(v)
    try:
        from curvlinops import HessianLinearOperator
        H = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params, [(X, Y)], check_deterministic=False)
        contenders['curvlinops HessianLinearOperator @ v'] = lambda: H @ v
        notes['curvlinops HessianLinearOperator @ v'] = f"rel. diff to ours {float((H @ v - ref).norm()/ref.norm()):.1e}"
    except ImportError:
        print("# curvlinops not installed: pip install curvlinops-for-pytorch (row skipped)")
    if args.linearize:
        from torch.func import linearize, grad
        rl = risks[('rev_rev', False)]
        gfun = lambda w: grad(rl._fsum)(w, X, Y)
        c0, t0 = time.process_time(), time.perf_counter()
        _, lin = linearize(gfun, r0.w); _sync(device)
        name = 'torch.func.linearize of the gradient (not offered)'
        setup[name] = (time.process_time() - c0, time.perf_counter() - t0)
        contenders[name] = lambda: lin(v)
        notes[name] = f"rel. diff {float((lin(v)/args.n - ref).norm()/ref.norm()):.1e}"
    for k, f in list(contenders.items()):
        if k.startswith('HVP') and k != f"HVP rev_rev, {_bn('rev_rev', False)}":
            d = f"rel. diff to rev_rev {float((f() - ref).norm()/ref.norm()):.1e}"
            notes[k] = d + (f"; {notes[k]}" if k in notes else '')
    per_col = {}
    for f in contenders.values(): f(); _sync(device)         # warm-up
    cpu = {k: [] for k in contenders}; wall = {k: [] for k in contenders}
    for rep in range(args.reps):
        for k, f in contenders.items():
            c0, t0 = time.process_time(), time.perf_counter()
            f(); _sync(device)
            cpu[k].append((time.process_time() - c0)/per_col.get(k, 1)); wall[k].append((time.perf_counter() - t0)/per_col.get(k, 1))
        print(f"# repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}
    mc, mw = med(cpu), med(wall)
    gc, gw = mc['gradient (Risk.grad)'], mw['gradient (Risk.grad)']
    cl = 'curvlinops HessianLinearOperator @ v'
    print(f"\n{args.reps} interleaved repetitions, medians. Ratios: to one gradient (Risk.grad) and to curvlinops' matvec. "
          f"Ablation rows: 'not folded' runs the model with eval-mode BatchNorm written as x*s + t (inside FastSecondOrder, so not folded "
          f"into the convolution); 'no FastSecondOrder' records the gradient graph as PyTorch's own kernels give it (before issue 17's change).\n")
    print("| contender | CPU s | wall s | CPU / gradient | wall / gradient | CPU / curvlinops | wall / curvlinops | note |")
    print("|---|---|---|---|---|---|---|---|")
    hv = f"HVP rev_rev, {_bn('rev_rev', False)}"
    for k in mixed: notes[k] = f"{mc[k]/mc[hv]:.2f}× one default HVP (CPU), {mw[k]/mw[hv]:.2f}× (wall)"
    for k in contenders:
        rc_ = f"{mc[k]/mc[cl]:.2f}" if cl in mc else '–'
        rw_ = f"{mw[k]/mw[cl]:.2f}" if cl in mw else '–'
        note = notes.get(k, '')
        if k in setup: note = (note + '; ' if note else '') + f"first call / set-up {setup[k][0]:.1f} s CPU, {setup[k][1]:.1f} s wall"
        print(f"| {k} | {mc[k]:.3f} | {mw[k]:.3f} | {mc[k]/gc:.2f} | {mw[k]/gw:.2f} | {rc_} | {rw_} | {note} |")


# ----------------------------------------------------------------------------------------- k right-hand sides
def kblock(args):
    "k right-hand sides at once (vmap) vs a loop over them, per mode, per column."
    device = args.device
    model, X, Y, _ = load(args.n, device)
    k = args.k
    g = torch.Generator(device='cpu').manual_seed(1)
    V = torch.randn(Risk(model, 'cross_entropy', X, Y).p, k, generator=g).to(device)
    contenders = {}
    for m in Risk.MODES:
        for vec in (True, False):
            r = Risk(model, 'cross_entropy', X, Y, hvp_mode=m, vectorize=vec)
            contenders[(m, vec)] = (lambda r=r: r.hvp(V))
    for f in contenders.values(): f(); _sync(device)         # warm-up (and builds the cached graphs)
    cpu = {c: [] for c in contenders}; wall = {c: [] for c in contenders}
    for rep in range(args.k_reps):
        for c, f in contenders.items():
            c0, t0 = time.process_time(), time.perf_counter(); f(); _sync(device)
            cpu[c].append((time.process_time() - c0)/k); wall[c].append((time.perf_counter() - t0)/k)
        print(f"# k-block repetition {rep + 1}/{args.k_reps} done", file=sys.stderr)
    print(f"\nk = {k} right-hand sides in one call, {args.n} images, {args.k_reps} interleaved repetitions, medians, "
          f"seconds per column (CPU / wall); ratio < 1: vmap faster than the loop.\n")
    print("| hvp_mode | vmap CPU s/col | loop CPU s/col | vmap / loop (CPU) | vmap wall s/col | loop wall s/col | vmap / loop (wall) |")
    print("|---|---|---|---|---|---|---|")
    for m in Risk.MODES:
        a, b = statistics.median(cpu[(m, True)]), statistics.median(cpu[(m, False)])
        aw, bw = statistics.median(wall[(m, True)]), statistics.median(wall[(m, False)])
        print(f"| {m} | {a:.3f} | {b:.3f} | {a/b:.2f} | {aw:.3f} | {bw:.3f} | {aw/bw:.2f} |")


# ----------------------------------------------------------------------------------------- memory
def _rss_kb():
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')//1024


def _hwm_kb():
    "Peak resident set size of this process image (VmHWM; unlike ru_maxrss it is not inherited across exec)."
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'): return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_one(n, bs, mode, device, solve=0):
    """Runs in a fresh process: peak extra memory (MiB) and time of one HVP over n images; with solve = s ≥ 2, of s
    products inside `risk.reusing()` (as a solve takes them; the default graph_cache), and the CPU time of the last."""
    model, X, Y, _ = load(n, device)
    r = Risk(model, 'cross_entropy', X, Y, batch_size=bs, hvp_mode=mode)
    v = torch.randn(r.p, device=device)
    Risk(model, 'cross_entropy', X[:2], Y[:2], hvp_mode=mode).hvp(v)      # warm-up (kernels, allocator) on 2 images
    cuda = torch.device(device).type == 'cuda'
    if cuda: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else: base = _rss_kb()
    t0 = time.perf_counter(); c0 = time.process_time()
    last, kept = None, None
    if solve:
        with r.reusing():
            for _ in range(solve):
                c1 = time.process_time(); r.hvp(v)
                if cuda: torch.cuda.synchronize()
                last = time.process_time() - c1
            kept = len(r._cache)
    else:
        r.hvp(v)
    if cuda: torch.cuda.synchronize(); peak = (torch.cuda.max_memory_allocated() - base)/2**20
    else: peak = (_hwm_kb() - base)/1024
    print(json.dumps(dict(n=n, bs=bs, peak_mib=peak, cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - t0,
                          last_cpu_s=last, kept=kept)))


def memory(args):
    print(f"\nPeak memory of one HVP ({args.mem_mode}) above the loaded model and data, each in a fresh process "
          f"({'peak RSS' if args.device == 'cpu' else 'max_memory_allocated'}); unchunked runs only up to n = {args.unchunked_max}.\n")
    print(f"Rows 'in a solve': {args.mem_solve} products inside `risk.reusing()` (the default graph_cache: 2 GiB, on CUDA a quarter of the free memory), as a solve takes "
          f"them; the CPU s columns are then those of the last product, which starts from the kept graphs.\n")
    print("| n | batch_size | products | peak MiB | CPU s | wall s | CPU s per 128 images | chunk graphs kept |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.mem_n:
        for bs in ([None] if n <= args.unchunked_max else []) + [args.mem_bs]:
            for solve in [0] + ([args.mem_solve] if args.mem_solve and bs else []):
                cmd = [sys.executable, os.path.abspath(__file__), '--_mem', str(n), str(bs or 0), args.mem_mode, str(solve),
                       '--device', args.device, '--threads', str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                what = f"in a solve ({solve})" if solve else 'one'
                if out.returncode != 0:
                    print(f"| {n} | {bs} | {what} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} | | | | |"); continue
                d = json.loads(out.stdout.strip().splitlines()[-1])
                c = d['last_cpu_s'] if solve else d['cpu_s']
                kept = f"{d['kept']} of {-(-n//bs)}" if solve else '–'
                print(f"| {n} | {bs or 'none'} | {what} | {d['peak_mib']:.0f} | {c:.2f} | {d['wall_s']:.2f} | {c*128/n:.2f} | {kept} |")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=128)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--linearize', action='store_true', help='also time torch.func.linearize (slow set-up, ~13 GB peak)')
    ap.add_argument('--k', type=int, default=4)
    ap.add_argument('--k-reps', type=int, default=3)
    ap.add_argument('--no-k', dest='kblock', action='store_false')
    ap.add_argument('--lean', action='store_true', help='timing table without the fwd_rev and BatchNorm-ablation rows')
    ap.add_argument('--no-timing', dest='timing', action='store_false')
    ap.add_argument('--mem-n', type=int, nargs='*', default=[256, 1024, 4096])
    ap.add_argument('--mem-bs', type=int, default=64)
    ap.add_argument('--mem-mode', default='rev_rev')
    ap.add_argument('--unchunked-max', type=int, default=256)
    ap.add_argument('--solve-bs', type=int, default=None, help='batch_size of the "in a solve" row (default: unchunked)')
    ap.add_argument('--mem-solve', type=int, default=2, help='products per "in a solve" memory run (0: no such rows)')
    ap.add_argument('--_mem', nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args._mem:
        n, bs, mode, solve = args._mem
        memory_one(int(n), int(bs) or None, mode, args.device, int(solve))
    else:
        if args.timing: timing(args)
        if args.kblock: kblock(args)
        if args.mem_n: memory(args)
