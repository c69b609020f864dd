#!/usr/bin/env python
"""Every notebook passes `nbdev_test` whatever an earlier notebook left behind in the worker process.

    python tools/nb_isolation.py [--workers 2] [NB ...]

`nbdev_test --n_workers 2` runs the notebooks in two long-lived worker processes, so one notebook starts with the
process state the previous one left: torch's default dtype (four chapters set float64) and the thread count. (The
global random generators need no such check: torch and numpy seed them randomly in every fresh process, so a notebook
that relies on them fails everywhere, not only after another notebook.) Which notebook follows which depends on scheduling, so a notebook that silently relies
on torch's defaults passes one run and fails the next (CI's stop 20: `load_pretrained()` returned float64 weights
after a float64 chapter had run in the same worker).

This tool runs each notebook as `nbdev_test` does (`nbdev.test.test_nb`, the `tst_flags` of settings.ini skipped), in
a fresh process that first sets the state a previous notebook may leave: float64 as torch's default dtype and one
thread. A notebook that passes here and in
`nbdev_test` does not depend on the order. Exit status 1 when one fails; its traceback is printed.
"""
from __future__ import annotations
import argparse, os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, torch
torch.set_default_dtype(torch.float64)          # what 11_lp, 30_robust, 31_aif and 36_aif_study set
torch.set_num_threads(1)
from pathlib import Path
from nbdev.config import get_config
from nbdev.test import test_nb
ok, _ = test_nb(Path(sys.argv[1]).resolve(), skip_flags=get_config().tst_flags.split())
sys.exit(0 if ok else 1)
"""


def run_one(nb: Path) -> tuple[Path, bool, float, str]:
    t0 = time.time()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
    p = subprocess.run([sys.executable, '-c', CHILD, str(nb)], cwd=ROOT, env=env, capture_output=True, text=True)
    return nb, p.returncode == 0, time.time() - t0, p.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', help="notebooks to run (default: nbs/*.ipynb, as nbdev_test's)")
    ap.add_argument('--workers', type=int, default=2, help='notebooks run at once (default 2)')
    a = ap.parse_args(argv)
    if a.workers < 1: ap.error(f'--workers: must be >= 1, got {a.workers}')
    nbs = [Path(n).resolve() for n in a.notebooks] or sorted(n for n in (ROOT/'nbs').glob('*.ipynb') if not n.name.startswith(('_', '.')))
    missing = [str(n) for n in nbs if not n.is_file()]
    if missing: ap.error(f'no such notebook: {", ".join(missing)}')
    failed = []
    with ThreadPoolExecutor(a.workers) as ex:
        for nb, ok, secs, err in ex.map(run_one, nbs):
            print(f"{'ok  ' if ok else 'FAIL'} {nb.name} ({secs:.0f} s)", flush=True)
            if not ok: failed.append((nb, err))
    for nb, err in failed: print(f'\n==== {nb.name} (after a float64, one-thread start)\n{err}', file=sys.stderr)
    print(f'{len(nbs) - len(failed)} of {len(nbs)} notebook(s) pass from a foreign start state'
          + (f'; failed: {", ".join(n.name for n, _ in failed)}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
