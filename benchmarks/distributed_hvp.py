"""Data-parallel HVP: 2 processes vs 1 on the pretrained ResNet-56 over 1024 CIFAR-10 images.

    python benchmarks/distributed_hvp.py [--n 1024] [--batch-size 64] [--reps 3]
    torchrun --nproc_per_node=2 benchmarks/distributed_hvp.py --torchrun     # the same, launched by torchrun

The single-process run uses all the machine's threads; each of the W processes gets threads/W
(so both use the same cores). Times are medians of --reps HVPs, after one warm-up, measured in one
run (1 process first, then W processes). The HVPs are also compared for equality (float32: the
reduction order differs, so agreement is to rounding).
"""
import argparse, os, statistics, sys, time
import torch
import torch.distributed as dist

def _setup(n, batch_size, rank=0, world=1):
    from setsens.cifar import load_pretrained, cifar10
    from setsens.risk import Risk
    from setsens.distributed import DistributedRisk, shard
    model = load_pretrained()
    X, Y = cifar10(split='train', n=n)
    if world == 1: return Risk(model, 'cross_entropy', X, Y, batch_size=batch_size)
    return DistributedRisk(Risk(model, 'cross_entropy', shard(X, rank, world), shard(Y, rank, world), batch_size=batch_size))

def _time_hvp(risk, reps, seed=0):
    v = torch.randn(risk.p, generator=torch.Generator().manual_seed(seed))
    out = risk.hvp(v)                                   # warm-up
    ts = []
    for _ in range(reps):
        if dist.is_initialized(): dist.barrier()
        t0 = time.perf_counter(); out = risk.hvp(v); ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out

def _worker(rank, world, n, batch_size, reps, threads):
    torch.set_num_threads(threads)
    t, out = _time_hvp(_setup(n, batch_size, rank, world), reps)
    return dict(t=t, hvp=out)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1024)
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--world', type=int, default=2)
    ap.add_argument('--torchrun', action='store_true', help='launched by torchrun: join its process group')
    a = ap.parse_args(argv)
    threads = torch.get_num_threads()
    if a.torchrun:
        dist.init_process_group('gloo')
        r = _worker(dist.get_rank(), dist.get_world_size(), a.n, a.batch_size, a.reps, max(1, threads // dist.get_world_size()))
        if dist.get_rank() == 0: print(f"{dist.get_world_size()} processes: HVP over {a.n} images {r['t']:.2f} s (median of {a.reps})")
        dist.destroy_process_group(); return
    from setsens.distributed import spawn_loopback
    print(f"ResNet-56 HVP over {a.n} CIFAR-10 images, batch_size {a.batch_size}, float32, CPU, {os.cpu_count()} cores, torch threads {threads}")
    t1, h1 = _time_hvp(_setup(a.n, a.batch_size), a.reps)
    r = spawn_loopback(_worker, a.world, a.n, a.batch_size, a.reps, max(1, threads // a.world))
    rel = float((r['hvp'] - h1).norm() / h1.norm())
    print(f"| processes | threads each | HVP time (s) | ratio to 1 process |")
    print(f"|---|---|---|---|")
    print(f"| 1 | {threads} | {t1:.2f} | 1.00 |")
    print(f"| {a.world} | {max(1, threads // a.world)} | {r['t']:.2f} | {r['t']/t1:.2f} |")
    print(f"relative difference of the two HVPs: {rel:.1e} (float32; the reduction order differs)")

if __name__ == '__main__':
    main()
