#!/usr/bin/env python
"""Where the time of a replayed HVP goes: the kernels of the default product inside a solve (`risk.reusing()`, the
recorded graph kept), with and without `FastSecondOrder` (chapter 06a), on the pretrained ResNet-56 and real CIFAR-10.

For each variant: the first product records the chunks' graphs, then `--reps` products are profiled with
`torch.profiler` (CPU self time per aten op, grouped by the op and its input shapes). Prints, per variant, the total
self time and the ops that take the most, so the expensive kernels can be named; and the self time of the
convolutions whose filter is a whole activation map (PyTorch's double backward of a convolution computes its weight
term as a convolution of transposed tensors) against all convolution kernels.

    python benchmarks/hvp_profile.py [--n 128] [--batch-size 64] [--reps 3] [--threads 1] [--top 8]

Profiler times include the profiler's own overhead; the ratios between the variants are what to read.
"""
import argparse, contextlib, os, sys
import torch
from torch.profiler import profile, ProfilerActivity

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from setsens.risk import Risk
from hvp import load, pytorch_double_backward

CONV_OPS = ('aten::mkldnn_convolution', 'aten::convolution_backward', 'aten::_convolution', 'aten::slow_conv2d_forward',
            'aten::cudnn_convolution', 'aten::thnn_conv2d')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=128)
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--top', type=int, default=8)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, X, Y, how = load(a.n, 'cpu')
    print(f"# ResNet-56 ({how}), {a.n} CIFAR-10 images, batch_size {a.batch_size}, float32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {a.reps} replayed products profiled per variant\n")
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
    for name, fast in [('without FastSecondOrder (PyTorch double backward)', False), ('FastSecondOrder (the default)', True)]:
        r = Risk(model, 'cross_entropy', X, Y, batch_size=a.batch_size)
        with r.reusing():
            with (contextlib.nullcontext() if fast else pytorch_double_backward()): r.hvp(v)   # records (and keeps) the chunks' graphs
            r.hvp(v)                                             # warm-up of the replay
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(a.reps): r.hvp(v)
        ev = prof.key_averages(group_by_input_shape=True)
        total = sum(e.self_cpu_time_total for e in ev)/1e6/a.reps
        conv = sum(e.self_cpu_time_total for e in ev if e.key in CONV_OPS)/1e6/a.reps
        # a convolution whose "filter" (second input) has the spatial size of its input: the transposed-tensor weight term
        big = sum(e.self_cpu_time_total for e in ev if e.key == 'aten::mkldnn_convolution' and len(e.input_shapes) > 1
                  and len(e.input_shapes[1]) == 4 and e.input_shapes[1][2:] == e.input_shapes[0][2:]
                  and e.input_shapes[1][2] > 3)/1e6/a.reps
        print(f"## {name}\n\nper replayed product: self CPU {total:.3f} s; convolution kernels {conv:.3f} s, of which "
              f"convolutions with an activation-map-sized filter {big:.3f} s\n")
        print("| op | input shapes | calls per product | self CPU s per product | share |")
        print("|---|---|---|---|---|")
        for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:a.top]:
            s = e.self_cpu_time_total/1e6/a.reps
            print(f"| {e.key} | {str(e.input_shapes[:2]).replace('|', '/')} | {e.count/a.reps:.0f} | {s:.3f} | {s/total:.0%} |")
        print()


if __name__ == '__main__':
    main()
