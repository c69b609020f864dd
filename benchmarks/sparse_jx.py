#!/usr/bin/env python
"""J·ΔX for one perturbed CIFAR-10 image: does the cost depend on how many images the data set holds? (issue 13.3)

A small CNN (or `--model resnet56`, the pretrained network) on real CIFAR-10 training images (`setsens.cifar.cifar10`),
the risk read through a `DataLoader` (batch_size 256, shuffle=False). One image is perturbed. Timed side by side,
interleaved in a random order, medians (and minima: the least disturbed run on a shared machine) over `--reps`:

* sparse: `risk.jx(dX_K, idx=K)`, dX_K shaped (1, 3, 32, 32): the image is fetched from `loader.dataset` by index;
* dense: `risk.jx(dX)` with an X-shaped dX that is zero except on that image: one pass over the loader, batches
  without a perturbed row skipped after they are read;
* iterable: `risk.jx(dX_K, idx=K)` on a plain list of the same batches (no random access: one pass, no model work on
  the other batches).

for a data set of `--n-big` images (default 5,000) and of `--n-small` (default 50), and prints each path's time ratio
big/small (the target for the sparse path is ≈ 1) with the sparse result checked against the dense one.

    python benchmarks/sparse_jx.py [--n-big 5000] [--n-small 50] [--reps 15] [--model cnn|resnet56] [--device cpu]

The default run takes well under a minute on two CPU cores (most of it the first pass that counts the rows, and the
dense path over 5,000 images).
"""
import argparse, random, statistics, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from setsens.risk import Risk
from setsens.cifar import cifar10


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def timed(f, device):
    if device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter(); out = f()
    if device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n-big', type=int, default=5000)
    ap.add_argument('--n-small', type=int, default=50)
    ap.add_argument('--reps', type=int, default=15)
    ap.add_argument('--batch-size', type=int, default=256)
    ap.add_argument('--model', choices=['cnn', 'resnet56'], default='cnn')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    X, Y = cifar10(n=a.n_big)                                     # real images, on the CPU (where a loader keeps them)
    if a.model == 'cnn': net = small_cnn()
    else:
        from setsens.cifar import load_pretrained
        net = load_pretrained()
    net = net.to(dev).eval()
    i = a.n_small // 2                                            # the perturbed image: in both data sets
    dXK = 0.01*torch.randn(1, *X.shape[1:], generator=torch.Generator().manual_seed(1)).to(dev)
    risks, dense = {}, {}
    t_build = {}
    for n in (a.n_big, a.n_small):
        ds = TensorDataset(X[:n], Y[:n])
        t0 = time.perf_counter()
        risks[('loader', n)] = Risk(net, 'cross_entropy', DataLoader(ds, batch_size=a.batch_size))
        t_build[n] = time.perf_counter() - t0
        risks[('iterable', n)] = Risk(net, 'cross_entropy', [(X[s:min(s + a.batch_size, n)], Y[s:min(s + a.batch_size, n)])
                                                            for s in range(0, n, a.batch_size)])
        D = torch.zeros((n,) + tuple(X.shape[1:]), device=dev); D[i] = dXK[0]
        dense[n] = D
    paths = {
        'sparse (loader, idx)': lambda n: risks[('loader', n)].jx(dXK, idx=[i]),
        'dense (loader, X-shaped dX)': lambda n: risks[('loader', n)].jx(dense[n]),
        'iterable (list of batches, idx)': lambda n: risks[('iterable', n)].jx(dXK, idx=[i]),
    }
    times = {(p, n): [] for p in paths for n in (a.n_big, a.n_small)}
    ref = {}
    rng = random.Random(0)
    for r in range(a.reps + 1):                                   # interleaved in a new random order each round (what
        order = [(p, n) for p in paths for n in (a.n_big, a.n_small)]   # runs before a call, e.g. a pass over 5,000
        rng.shuffle(order)                                        # images, disturbs it); the first round is a warm-up
        for p, n in order:
            t, out = timed(lambda: paths[p](n), dev)
            if r: times[(p, n)].append(t)
            ref.setdefault(n, out)                                # all three paths compute the same J·ΔX (float32)
            err = float((out - ref[n]).abs().max()/ref[n].abs().max())
            assert err < 1e-4, f"{p}, n={n}: differs from another path's J·ΔX by {err:.2e}"
    print(f"# J·ΔX for 1 perturbed image of n real CIFAR-10 images through a DataLoader ({a.model}, p = {risks[('loader', a.n_big)].p}, "
          f"{a.device}, {a.threads} thread(s), batch_size {a.batch_size}, median of {a.reps})\n")
    print(f"| path | n = {a.n_big}: median (min) ms | n = {a.n_small}: median (min) ms | ratio of medians | ratio of minima |")
    print("|---|---|---|---|---|")
    for p in paths:
        tb, ts = times[(p, a.n_big)], times[(p, a.n_small)]
        big, small = statistics.median(tb), statistics.median(ts)
        print(f"| {p} | {1e3*big:.2f} ({1e3*min(tb):.2f}) | {1e3*small:.2f} ({1e3*min(ts):.2f}) | {big/small:.2f} | "
              f"{min(tb)/min(ts):.2f} |")
    print(f"\n(building the risks, one counting pass each: {t_build[a.n_big]:.2f} s for n = {a.n_big}, "
          f"{t_build[a.n_small]:.3f} s for n = {a.n_small}; not part of the times above)")


if __name__ == '__main__':
    sys.exit(main())
