#!/usr/bin/env python
"""Peak memory of one `Risk.hvp` call as the number of data points n grows, at a fixed `batch_size`.

The real ResNet-56 (pretrained, `setsens.cifar.load_pretrained`) on the first n real CIFAR-10 training
images (`setsens.cifar.cifar10`), cross-entropy loss, all 853,018 parameters, one right-hand side
V ~ N(0, I). `Risk` chunks the data into batches of `batch_size` and sums the chunk products, so the
extra memory of a call should not depend on n: it should stay flat.

Each size runs in a fresh subprocess (nothing cached from a previous size). In the child:

1. load the model and the n images, build the `Risk` (its inputs X count in the baseline: 12 KiB per
   image in float32, so the baseline grows with n — by design, the data must be somewhere);
2. warm up with one HVP on a separate `Risk` over the first `batch_size` images (thread pools,
   oneDNN primitives, allocator arenas), then `gc.collect()`;
3. record the resident set size (RSS) before the call, reset the kernel's high-water mark, call
   `risk.hvp(V)` once, read the high-water mark. **Peak MB = high-water mark − RSS before the call**:
   the extra memory the call needed at its worst moment.

Method (printed with the table): on Linux, write "5" to /proc/self/clear_refs, which resets VmHWM (the
peak RSS) of the process, and read VmRSS/VmHWM from /proc/self/status. Where clear_refs is not
writable, a thread samples VmRSS every millisecond (an under-estimate between samples). Elsewhere,
`resource.getrusage(RUSAGE_SELF).ru_maxrss` minus the RSS before the call (valid only if the call's
peak exceeds everything before it). With `--device cuda` the table also gives
`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (the allocator's exact peak).

    python benchmarks/memory.py [--sizes 256 1024 4096] [--batch-size 64] [--mode rev_rev]
                                [--threads 2] [--device cpu] [--timeout 7200]

It asserts nothing (a benchmark); it prints one row per size and whether the peak stayed flat
(max/min of the peaks ≤ 1.25).
"""
from __future__ import annotations
import argparse, gc, json, os, resource, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- memory probes
def _status(field: str) -> float | None:
    "A /proc/self/status field (kB) in MiB, or None off Linux."
    try:
        for line in open('/proc/self/status'):
            if line.startswith(field + ':'): return int(line.split()[1]) / 1024
    except OSError: return None
    return None


def _reset_hwm() -> bool:
    "Reset the kernel's peak-RSS counter of this process (Linux ≥ 4.0); False if not possible."
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError: return False


class _Sampler(threading.Thread):
    "Fallback: sample VmRSS every `dt` seconds and keep the maximum."
    def __init__(self, dt=1e-3):
        super().__init__(daemon=True); self.dt, self.peak, self.stop = dt, 0., threading.Event()
    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, _status('VmRSS') or 0.); time.sleep(self.dt)


def measure(fn, device):
    "Run fn() once; return (peak extra MiB over the RSS before, seconds, method, cuda peak MiB or None)."
    import torch
    gc.collect()
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize(device); torch.cuda.reset_peak_memory_stats(device)
        cuda0 = torch.cuda.memory_allocated(device)
    before = _status('VmRSS')
    sampler = None
    if before is not None and _reset_hwm(): method = 'VmHWM after clear_refs=5 (exact peak RSS)'
    elif before is not None:
        method = 'VmRSS sampled every 1 ms (lower bound)'; sampler = _Sampler(); sampler.start()
    else:
        method = 'ru_maxrss − RSS before (upper bound on a warm process)'
    t0 = time.perf_counter()
    out = fn()
    if cuda: torch.cuda.synchronize(device)
    secs = time.perf_counter() - t0
    if sampler is not None: sampler.stop.set(); sampler.join(); peak = sampler.peak
    elif before is not None: peak = _status('VmHWM')
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 * (1 / 1024 if sys.platform == 'darwin' else 1)
        before = 0.
    cuda_peak = (torch.cuda.max_memory_allocated(device) - cuda0) / 2**20 if cuda else None
    del out
    return peak - before, secs, method, cuda_peak


# ----------------------------------------------------------------------------- one size, in a child
def child(n: int, batch_size: int, mode: str, threads: int, device: str, seed: int = 0) -> dict:
    import torch
    torch.set_num_threads(threads)
    from setsens.cifar import cifar10, load_pretrained
    from setsens.risk import Risk
    dev = torch.device(device)
    model = load_pretrained(device=dev)
    X, Y = cifar10(n=n, device=dev)
    risk = Risk(model, 'cross_entropy', X, Y, batch_size=batch_size, hvp_mode=mode)
    V = torch.randn(risk.p, generator=torch.Generator().manual_seed(seed)).to(dev)
    warm = Risk(model, 'cross_entropy', X[:batch_size], Y[:batch_size], batch_size=batch_size, hvp_mode=mode)
    warm.hvp(V); del warm
    gc.collect()
    base = _status('VmRSS')
    peak, secs, method, cuda_peak = measure(lambda: risk.hvp(V), dev)
    return dict(n=n, batch_size=batch_size, mode=mode, p=risk.p, baseline_mb=base, peak_mb=peak, seconds=secs,
                method=method, cuda_peak_mb=cuda_peak, threads=threads, device=str(dev), torch=torch.__version__,
                data_mb=X.element_size() * X.numel() / 2**20)


# ----------------------------------------------------------------------------- driver
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[256, 1024, 4096])
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--mode', default='rev_rev', choices=['rev_rev', 'fwd_rev'])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--timeout', type=float, default=7200., help='seconds per size before giving up on it')
    ap.add_argument('--child', type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print('RESULT ' + json.dumps(child(a.child, a.batch_size, a.mode, a.threads, a.device)), flush=True)
        return 0
    print(f"Risk.hvp peak memory, ResNet-56 (853,018 parameters), CIFAR-10, batch_size={a.batch_size}, "
          f"mode={a.mode}, {a.threads} threads, device={a.device}; one fresh process per size", flush=True)
    rows = []
    for n in a.sizes:
        cmd = [sys.executable, __file__, '--child', str(n), '--batch-size', str(a.batch_size), '--mode', a.mode,
               '--threads', str(a.threads), '--device', a.device]
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            print(f"n={n}: gave up after {a.timeout:.0f} s", flush=True); continue
        line = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
        if r.returncode or not line:
            print(f"n={n}: failed (exit {r.returncode})\n{r.stderr[-2000:]}", flush=True); continue
        row = json.loads(line[0][7:]); rows.append(row)
        print(f"n={n}: peak {row['peak_mb']:.1f} MB in {row['seconds']:.1f} s (child wall {time.perf_counter() - t0:.0f} s)", flush=True)
    if not rows: return 1
    print(f"\nmethod: {rows[0]['method']}; torch {rows[0]['torch']}\n")
    cu = rows[0]['cuda_peak_mb'] is not None
    print('| n | batch_size | peak MB (extra RSS during the call) | baseline RSS MB (model + data) | X MB | time s |'
          + (' CUDA peak MB |' if cu else ''))
    print('|---|---|---|---|---|---|' + ('---|' if cu else ''))
    for r in rows:
        print(f"| {r['n']} | {r['batch_size']} | {r['peak_mb']:.1f} | {r['baseline_mb']:.0f} | {r['data_mb']:.1f} | "
              f"{r['seconds']:.1f} |" + (f" {r['cuda_peak_mb']:.1f} |" if cu else ''))
    peaks = [r['peak_mb'] for r in rows]
    if len(rows) > 1:
        ratio = max(peaks) / max(min(peaks), 1e-9)
        print(f"\npeak ratio max/min over n = {', '.join(str(r['n']) for r in rows)}: {ratio:.2f} "
              f"({'flat' if ratio <= 1.25 else 'NOT flat'}, threshold 1.25); time per image: "
              + ', '.join(f"{r['seconds'] / r['n']:.3f} s" for r in rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
