#!/usr/bin/env python
"""The engine benchmark of issue 3 in one run: Hessian-vector products, then Krylov solves.

This driver runs the two scripts that measure the engine, one after the other in the same session,
and prints their tables under one heading (each script interleaves its own contenders and quotes
medians, so every ratio in a table was measured side by side):

1. `benchmarks/hvp.py`: HVP time / gradient time per `hvp_mode`, setsens' HVP / curvlinops'
   `HessianLinearOperator` matvec, the default mode inside a solve (`risk.reusing()`: the recorded
   graph kept within `graph_cache`), k right-hand sides (vmap) vs a loop, and the peak memory of an
   HVP over 256 to 4096 images with `batch_size=64` vs unchunked (one product, and two in a solve),
   on the real pretrained ResNet-56 and CIFAR-10 images.
2. `benchmarks/krylov.py`: first setsens `minres` against SciPy's MINRES at equal products on the
   N = 2000 singular PSD system (float64, one thread; wall ratio with each one's dense product, with
   the same torch product, and the per-iteration overhead; batched vs looped right-hand sides; issue 17:
   goal ≤ 1.2×), then HVPs and wall time to ‖H(Hv + b)‖ ≤ 1e-4 ‖Hb‖ for minres, cgls, lsqr and
   curvlinops' `LSMRInverseLinearOperator`, and 16 right-hand sides batched vs one by one.

    python benchmarks/engine.py [--quick] [--device cpu|cuda]

`--quick` shrinks both (64 images, 2 repetitions, memory up to 256 images, the small dense Krylov
problem only): a few minutes on two CPU cores. Needs `curvlinops-for-pytorch` for the curvlinops
rows (`pip install -e ".[bench]"`); without it those rows are skipped with a note.
"""
import argparse, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script, args):
    "Run one benchmark script with this interpreter; its stdout is the table, its stderr the progress."
    cmd = [sys.executable, str(HERE/script), *args]
    print(f"\n## `python benchmarks/{script} {' '.join(args)}`\n", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    print(r.stdout, flush=True)
    print(f"_({script}: exit {r.returncode}, {time.perf_counter() - t0:.0f} s)_", flush=True)
    return r.returncode


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='small sizes (a few minutes on two CPU cores)')
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (the HVP part)")
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args(argv)
    th = ['--threads', str(a.threads)]
    hvp = ['--device', a.device, *th] + (['--n', '64', '--reps', '2', '--k-reps', '2', '--mem-n', '64', '256',
                                          '--unchunked-max', '64'] if a.quick else [])
    kry = th + (['--quick'] if a.quick else [])
    print(f"# setsens engine benchmark ({'quick' if a.quick else 'full'} sizes)")
    rc = run('hvp.py', hvp) | run('krylov.py', kry)
    sys.exit(rc)


if __name__ == '__main__':
    main()
