#!/usr/bin/env python
"""Issue 17, idea 1: does `torch.compile` make a Hessian-vector product cheaper? Measured, not assumed.

On the real pretrained ResNet-56 and the first n real CIFAR-10 training images (float32, `benchmarks/hvp.load`), with
`torch.func` (`functional_call`, `grad`, `vjp`, `jvp`), this times side by side, interleaved, CPU-time medians:

* one gradient (eager): the unit;
* the eager reverse-over-reverse HVP as one call (record the gradient's graph, then back-propagate through it: what
  `Risk.hvp` does outside a solve) and its replay alone (the graph kept: what the default does inside a solve);
* `torch.compile` of the whole forward-over-reverse HVP (`jvp` of `grad`) and of the whole reverse-over-reverse HVP
  (`vjp` of `grad`), each traced by Dynamo into one graph and compiled by Inductor; their compile time (first call)
  and their relative difference to the eager product.

    python benchmarks/hvp_compile.py [--n 128] [--reps 5] [--threads 1] [--modes fwd_rev rev_rev] [--device cpu|cuda]

Each compile takes minutes on CPU (about 2¼ min per mode for ResNet-56 on one core); the table says what it buys. On
CPU the times are CPU-time medians; on CUDA, wall-time medians with the device synchronised (`gpu_suite.py` section 6).
"""
import argparse, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vjp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hvp import load


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=128, help='CIFAR-10 training images')
    ap.add_argument('--reps', type=int, default=5, help='interleaved repetitions (medians)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--modes', nargs='*', default=['fwd_rev', 'rev_rev'], help='which HVPs to compile')
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cuda = torch.device(a.device).type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = time.perf_counter if cuda else time.process_time             # wall on a GPU, CPU time on the CPU
    model, X, Y, how = load(a.n, a.device)
    P = {k: v.detach() for k, v in model.named_parameters()}
    B = dict(model.named_buffers())
    loss = lambda p: F.cross_entropy(functional_call(model, (p, B), (X,)), Y, reduction='sum')
    V = {k: torch.randn_like(t) for k, t in P.items()}
    gradient = lambda: grad(loss)(P)
    rev_rev = lambda p, v: vjp(grad(loss), p)[1](v)[0]
    fwd_rev = lambda p, v: jvp(grad(loss), (p,), (v,))[1]
    _, replay = vjp(grad(loss), P)                          # the recorded graph, kept (the default inside a solve)
    flat = lambda d: torch.cat([t.reshape(-1) for t in d.values()])
    ref = flat(rev_rev(P, V))
    rows = {'gradient (eager)': gradient, 'HVP rev_rev, eager, one call (Risk.hvp outside a solve)': lambda: rev_rev(P, V),
            'HVP rev_rev, eager, graph kept (the default inside a solve)': lambda: replay(V)}
    notes = {}
    for m in a.modes:
        f = torch.compile({'fwd_rev': fwd_rev, 'rev_rev': rev_rev}[m])
        t0, c0 = time.perf_counter(), time.process_time()
        out = f(P, V); sync()
        name = f'HVP {m}, torch.compile (Inductor)'
        notes[name] = (f"first call (compile) {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU; "
                       f"rel. diff to eager {float((flat(out) - ref).norm()/ref.norm()):.1e}")
        rows[name] = (lambda f: lambda: f(P, V))(f)
        print(f"# compiled {m}", file=sys.stderr, flush=True)
    for f in rows.values(): f()                               # warm-up
    ts = {k: [] for k in rows}
    for r in range(a.reps):
        for k, f in rows.items():
            sync(); c0 = clock(); f(); sync(); ts[k].append(clock() - c0)
        print(f"# repetition {r + 1}/{a.reps} done", file=sys.stderr, flush=True)
    med = {k: sorted(v)[len(v)//2] for k, v in ts.items()}
    g = med['gradient (eager)']
    unit = 'wall' if cuda else 'CPU'
    print(f"# torch.compile and the HVP: ResNet-56 ({how}), {a.n} CIFAR-10 images, {a.device}, float32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {a.reps} interleaved repetitions, {unit}-time medians\n")
    print(f"| contender | {unit} s | {unit} / gradient | note |\n|---|---|---|---|")
    for k, t in med.items(): print(f"| {k} | {t:.3f} | {t/g:.2f} | {notes.get(k, '')} |")


if __name__ == '__main__':
    main()
