"""Stress loop for the distributed tests (issue 18): run the sharded-vs-single comparison many times, 2 and 3 ranks,
optionally with a busy process loading the CPU, and report the failure rate. Not run in CI.

    python tools/stress_distributed.py --runs 100 --busy 1
"""
import argparse, multiprocessing as mp, sys, time, traceback, collections
from pathlib import Path

def _burn(stop):
    x = 0
    while not stop.is_set(): x = (x * 1103515245 + 12345) % 2**31

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=100, help='how many spawn_loopback runs (alternating the cases)')
    ap.add_argument('--busy', type=int, default=1, help='busy processes competing for the CPU')
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tests'))   # the test harness
    from setsens.distributed import spawn_loopback
    from distributed_harness import sharded_products
    cases = [(2, [20, 3]), (3, [4, 15, 4]), (3, [10, 1, 12])]
    stop = mp.Event(); burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(a.busy)]
    for b in burners: b.start()
    fails, t0 = collections.Counter(), time.time()
    try:
        for i in range(a.runs):
            world, sizes = cases[i % len(cases)]
            try: spawn_loopback(sharded_products, world, sizes)
            except Exception as e:
                fails[f'{type(e).__name__}: {str(e).splitlines()[0][:120]}'] += 1
                print(f'run {i} (world {world}, sizes {sizes}) FAILED: {e!r}'[:300], flush=True)
            if (i + 1) % 10 == 0: print(f'{i + 1} runs, {sum(fails.values())} failures, {time.time() - t0:.0f} s', flush=True)
    finally:
        stop.set()
        for b in burners: b.join()
    n = sum(fails.values())
    print(f'{a.runs} runs, {n} failed ({100 * n / a.runs:.1f} %), busy={a.busy}, {time.time() - t0:.0f} s')
    for k, v in fails.most_common(): print(f'  {v} x {k}')

if __name__ == '__main__': main()
