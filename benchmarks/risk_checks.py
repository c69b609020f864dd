"""Cost of the per-chunk finite checks (and the construction-time probe) added to `Risk` by issue 15:
new `setsens.risk` against the committed `git show HEAD:setsens/risk.py`, interleaved in one process.

    python benchmarks/risk_checks.py [--n 64] [--batch-size 32] [--reps 5] [--threads 1] [--model resnet56|cnn]
"""
import argparse, statistics, subprocess, sys, time, types
from pathlib import Path
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import setsens.risk as new
from setsens.cifar import load_pretrained, cifar10


def head_module(rev='HEAD'):
    "setsens/risk.py as committed at `rev`, loaded as a module of the setsens package."
    src = subprocess.check_output(['git', 'show', f'{rev}:setsens/risk.py'], cwd=ROOT).decode()
    m = types.ModuleType('setsens._risk_head'); m.__package__ = 'setsens'; sys.modules[m.__name__] = m
    exec(compile(src, f'{rev}:setsens/risk.py', 'exec'), m.__dict__)
    return m


def timed(f):
    c, t = time.process_time(), time.perf_counter()
    out = f()
    return out, time.process_time() - c, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=64); ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--reps', type=int, default=5); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--model', default='resnet56', choices=['resnet56', 'cnn'])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    old = head_module()
    X, Y = cifar10(n=a.n)
    if a.model == 'resnet56': net = load_pretrained()
    else:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(32, 10)).eval()
    print(f"# {a.model}, {a.n} real CIFAR-10 training images, batch_size={a.batch_size}, cpu float32, torch {torch.__version__}, "
          f"{a.threads} thread(s); old = git HEAD setsens/risk.py, new = working tree; {a.reps} interleaved repetitions, medians")
    build = {'old': [], 'new': []}
    risks = {}
    for _ in range(3):
        for k, mod in (('old', old), ('new', new)):
            risks[k], c, w = timed(lambda: mod.Risk(net, 'cross_entropy', X, Y, batch_size=a.batch_size))
            build[k].append(c)
    p = risks['new'].p
    v = torch.randn(p, generator=torch.Generator().manual_seed(0))
    res = {(k, op): [] for k in risks for op in ('hvp', 'grad')}
    outs = {}
    for k in risks: risks[k].hvp(v)   # warm-up
    for _ in range(a.reps):
        for k in ('old', 'new'):
            outs[k], c, w = timed(lambda: risks[k].hvp(v)); res[k, 'hvp'].append(c)
            _, c, w = timed(lambda: risks[k].grad()); res[k, 'grad'].append(c)
    assert torch.equal(outs['old'], outs['new']), 'the HVPs differ'
    print(f"p = {p}; HVPs bit-identical old vs new: True")
    print('| operation | old CPU s (median) | new CPU s (median) | new/old |')
    print('|---|---|---|---|')
    for op in ('hvp', 'grad'):
        o, n_ = statistics.median(res['old', op]), statistics.median(res['new', op])
        print(f"| {op}{' (rev_rev)' if op == 'hvp' else ''} | {o:.3f} | {n_:.3f} | {n_/o:.3f} |")
    o, n_ = statistics.median(build['old']), statistics.median(build['new'])
    print(f"| construction (probe) | {o:.3f} | {n_:.3f} | {n_/o:.2f} (+{n_ - o:.3f} s once) |")


if __name__ == '__main__':
    main()
