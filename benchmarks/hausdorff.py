"""setsens.sets vs scipy.spatial.distance.directed_hausdorff, side by side in one run.

Cases (float32 inputs on the CPU, as in issue 2 §5):
  a  close clouds, B = A + 1e-3·noise, 20,000 × 20,000 points, d = 64   (scipy's worst case)
  b  separated random clouds (B shifted by 20 along e1), same size    (scipy's best case)
  c  close clouds of 1,000 points in d = 100,000
  big (only with --big)  close clouds, 100,000 × 100,000 points, d = 64, setsens only

Compared quantity: the directed distance e(A, B) (`setsens.sets.excess` vs `directed_hausdorff(A, B)`),
and, with --symmetric (default for a and b), the Pompeiu–Hausdorff distance h(A, B)
(`setsens.sets.hausdorff` vs max of scipy's two directed calls).

Timing: the tools alternate within each repetition (order flipped every repetition); the table shows
medians. Memory: measured in a separate child process per case and tool (so that it does not disturb
the timings): the growth of the process's peak resident set (VmHWM) during one call, with VmHWM reset
through /proc/self/clear_refs just before the call and glibc told (mallopt) to return freed blocks
to the system, so it counts all extra memory of the call (numpy's float64 copies, torch's buffers).

Run:  python benchmarks/hausdorff.py [--reps 3] [--threads 1] [--cases a,b,c] [--big]
"""
from __future__ import annotations
import argparse, ctypes, os, platform, re, statistics, sys, time
import numpy as np, torch
from scipy.spatial.distance import directed_hausdorff
from setsens.sets import excess, hausdorff

def _mallopt():
    "Make glibc return freed blocks ≥ 128 KiB to the system (fixed mmap threshold), so RSS tracks live memory."
    try:
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-3, 128*1024)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128*1024)   # M_TRIM_THRESHOLD
    except OSError: pass

def _status():
    s = open('/proc/self/status').read()
    return {k: int(re.search(k + r':\s+(\d+)', s).group(1)) * 1024 for k in ('VmRSS', 'VmHWM')}

def measure(f):
    "Run f(); return (seconds, value)."
    t = time.perf_counter(); v = f(); dt = time.perf_counter() - t
    return dt, float(v)

def peak_memory(f):
    "Peak extra resident memory (bytes) of f() in this process: VmHWM growth after a reset, or None."
    try:
        with open('/proc/self/clear_refs', 'w') as fh: fh.write('5')   # reset VmHWM to the current RSS
        before = _status()['VmRSS']
    except OSError: return None
    f()
    return _status()['VmHWM'] - before

def _child(case, tool, what, threads):
    "Entry point of the memory-measuring child process: prints the peak extra bytes."
    _mallopt(); torch.set_num_threads(threads)
    A, B = make(case); tA, tB = torch.from_numpy(A), torch.from_numpy(B)
    f = _calls(A, B, tA, tB)[what][tool]
    print(peak_memory(f))

def child_memory(case, tool, what, threads):
    import subprocess
    out = subprocess.run([sys.executable, __file__, '--child', case, tool, what, str(threads)],
                         capture_output=True, text=True, check=True).stdout.split()
    return None if out[-1] == 'None' else int(out[-1])

def _calls(A, B, tA, tB):
    return {'e(A,B)': {'scipy': lambda: directed_hausdorff(A, B)[0], 'setsens': lambda: excess(tA, tB)},
            'h(A,B)': {'scipy': lambda: max(directed_hausdorff(A, B)[0], directed_hausdorff(B, A)[0]),
                       'setsens': lambda: hausdorff(tA, tB)}}

def make(case, seed=0):
    rng = np.random.default_rng(seed)
    if case in ('a', 'b', 'big'):
        n, d = (100_000 if case == 'big' else 20_000), 64
    else: n, d = 1_000, 100_000
    A = rng.standard_normal((n, d), dtype=np.float32)
    if case == 'b':
        B = rng.standard_normal((n, d), dtype=np.float32); B[:, 0] += 20
    else:
        B = A + np.float32(1e-3) * rng.standard_normal((n, d), dtype=np.float32)
    return A, B

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['--child']: return _child(argv[1], argv[2], argv[3], int(argv[4]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1, help='torch intra-op threads (scipy uses one)')
    ap.add_argument('--cases', default='a,b,c')
    ap.add_argument('--symmetric', default='a,b', help='cases also compared on h (scipy: two directed calls)')
    ap.add_argument('--big', action='store_true', help='also run 10^5 × 10^5, d = 64 (setsens only)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w = torch.randn(300, 64); excess(w, w + 1e-3); directed_hausdorff(w.numpy(), w.numpy())   # warm-up
    cases = [c for c in args.cases.split(',') if c]
    sym = set(args.symmetric.split(','))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"torch {torch.__version__} ({args.threads} thread{'s'*(args.threads > 1)}), numpy {np.__version__}; reps {args.reps}", flush=True)
    rows = []
    for case in cases:
        A, B = make(case)
        tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        label = {'a': 'a: close, 20k×20k, d=64', 'b': 'b: separated, 20k×20k, d=64', 'c': 'c: close, 1k×1k, d=100k'}[case]
        calls = _calls(A, B, tA, tB)
        for what in ['e(A,B)'] + (['h(A,B)'] if case in sym else []):
            res = {'scipy': [], 'setsens': []}
            for r in range(args.reps):
                for name in ['scipy', 'setsens'][::(1 if r % 2 == 0 else -1)]:
                    res[name].append(measure(calls[what][name]))
                    print(f"  {label} {what} rep {r}: {name:8s} {res[name][-1][0]:8.3f} s  value {res[name][-1][1]:.9g}", flush=True)
            ts, tt = (statistics.median(x[0] for x in res[k]) for k in ('scipy', 'setsens'))
            vs, vt = res['scipy'][0][1], res['setsens'][0][1]
            ms, mt = (child_memory(case, k, what, args.threads) for k in ('scipy', 'setsens'))
            print(f"  {label} {what}: peak extra memory scipy {ms/2**20:.0f} MiB, setsens {mt/2**20:.0f} MiB", flush=True)
            rows.append((label, what, ts, tt, ts/tt, abs(vt - vs)/abs(vs), ms, mt, vs))
        del A, B, tA, tB
    if args.big:
        A, B = make('big'); tA, tB = torch.from_numpy(A), torch.from_numpy(B)
        dt, v = measure(lambda: excess(tA, tB))
        del A, B, tA, tB
        mem = child_memory('big', 'setsens', 'e(A,B)', args.threads)
        print(f"  big: close, 100k×100k, d=64 e(A,B): setsens {dt:.1f} s, value {v:.9g}, peak extra memory {mem/2**20:.0f} MiB", flush=True)
        rows.append(('big: close, 100k×100k, d=64 (setsens only)', 'e(A,B)', float('nan'), dt, float('nan'), float('nan'), float('nan'), mem, float('nan')))
    print()
    print('| case | distance | scipy (s) | setsens (s) | speed-up | rel. difference | scipy peak extra (MiB) | setsens peak extra (MiB) |')
    print('|---|---|---|---|---|---|---|---|')
    for label, what, ts, tt, ratio, rel, ms, mt, vs in rows:
        f = lambda x, fmt: '–' if x != x else format(x, fmt)
        print(f"| {label} | {what} | {f(ts, '.3f')} | {tt:.3f} | {f(ratio, '.1f') + ('×' if ratio == ratio else '')} | {f(rel, '.1e')} | {f(ms/2**20, '.0f')} | {mt/2**20:.0f} |")

if __name__ == '__main__':
    main()
