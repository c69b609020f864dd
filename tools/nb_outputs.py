#!/usr/bin/env python
"""Executed notebooks, the nbdev way: save every notebook's outputs at CI sizes, and check that they are current.

    python tools/nb_outputs.py --save  [NB ...]     # execute, write the outputs into the notebooks, nbdev_clean them
    python tools/nb_outputs.py --check [NB ...]     # execute again; exit 1 when a stored output is missing or stale

Execution is `nbdev_test`'s, cell for cell: each notebook runs in its own process under execnb's `CaptureShell`, with
`IN_TEST=1`, the notebook's folder as working directory, the project root on `sys.path`, and the cells `nbdev_test`
skips skipped (flags of `tst_flags` in settings.ini, `#| eval: false`, `nbdev_export(` calls). A skipped cell keeps
whatever output it has (the recorded output of a `#| slow`/`#| gpu` run, if any) and is not checked.

What is stored, so that two runs store the same thing:
- stdout, `display`ed and returned values, figures (image/png). **stderr is never stored**: it carries warnings and
  progress bars, which are not results; `--save` lists every cell that wrote to stderr so its cause can be fixed.
- this checkout's absolute path is written `<repo>` (a machine path is not a result either); `--save` lists those cells.
- the wall-clock field of the project's solver records (`KrylovInfo(..., seconds=0.0145, ...)`, and any `seconds=` or
  `'seconds': ` followed by a number) is written `seconds=…`: every record that carries a timing names it `seconds`.
  Other printed timings are a defect of the cell that prints them (fix the cell).
- then `nbdev_clean` (execution counts, metadata, object ids in reprs), so the CI sync check sees no diff.

What `--check` compares, cell by cell (code cells that run): an error output in either copy fails; an output the
execution produces that the stored copy lacks fails; text (stdout, text/plain, text/markdown, text/html with tags
stripped) must agree after normalising numbers: the words must be equal and every number must agree by value within
`--rtol` (default 1e-6) of the larger, plus the rounding of the printed digits (half a unit in the last digit of
each copy: `0.1235` against `0.12349999` passes, `0.1235` against `0.1243` fails; integers must be equal), numbers below `--atol` (default 1e-12) in magnitude counting as
equal (round-off is not reproducible across machines); figures by presence (each image/png of one copy must have one
in the other). Timings must not be printed (they cannot be checked); nothing here filters them.
"""
from __future__ import annotations
import argparse, json, math, os, re, subprocess, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

# ---------------------------------------------------------------- execution (in a child process, as nbdev_test does)

def _execute_child(src: str, dest: str):
    "Run `src` as `nbdev_test` would and write a JSON list {idx: outputs} of the cells that ran to `dest`."
    os.environ['IN_TEST'] = '1'
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    from execnb.shell import CaptureShell
    from execnb.nbio import nb2dict
    fn = Path(src).resolve()
    try: cfg = get_config(path=fn.parent); skip = set(cfg.tst_flags.split()); base = str(cfg.config_path)
    except Exception: skip, base = {'notest', 'slow', 'gpu'}, str(ROOT)
    sys.path.insert(0, base)
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    def no_eval(cell):   # nbdev.test.test_nb's `_no_eval`, verbatim in substance
        if cell.cell_type != 'code': return True
        if 'nbdev_export' + '(' in cell.source: return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return skip & direc.keys()
    ran, k = {}, CaptureShell(fn)
    def post(cell): ran[cell.idx_] = nb2dict(list(getattr(cell, 'outputs', []) or []))
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = []   # a cell that prints nothing must not keep the stored outputs
    with working_directory(fn.parent):
        for cell in nb.cells:
            if no_eval(cell): continue
            k.cell(cell); post(cell)
            if k.exc: break   # nbdev_test stops at the first exception; the error output is recorded
    Path(dest).write_text(json.dumps({str(i): o for i, o in ran.items()}))

def execute(nb: Path, timeout: int = 900) -> dict[int, list]:
    "Execute notebook `nb` in a fresh process; return {cell index: outputs} of the cells that ran."
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)/'outputs.json'
        env = dict(os.environ, IN_TEST='1', MPLBACKEND='module://matplotlib_inline.backend_inline')
        # one thread, always: float32 results (the ResNet chapters) change in the 4th digit with the thread count, and a
        # caller's OMP_NUM_THREADS=2 once stored outputs that --check (one thread) then called stale
        env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
        r = subprocess.run([sys.executable, __file__, '--_child', str(nb), str(out)], env=env, cwd=nb.parent,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode or not out.exists():
            raise RuntimeError(f"{nb.name}: the executor itself failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
        return {int(i): o for i, o in json.loads(out.read_text()).items()}

# ---------------------------------------------------------------- what is stored

def _text(v) -> str: return ''.join(v) if isinstance(v, list) else str(v)

_SECONDS = re.compile(r"(\bseconds\s*=\s*|'seconds'\s*:\s*)[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

def _sanitise(outputs: list, notes: list, where: str) -> list:
    "Drop stderr streams; write this checkout's path as `<repo>` and wall-clock `seconds=` fields as `seconds=…`; note them."
    keep = []
    for o in outputs:
        if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
            first = _text(o.get('text', '')).strip().splitlines()
            notes.append(f"{where}: wrote to stderr (not stored): {first[0][:160] if first else ''}"); continue
        s = json.dumps(o, ensure_ascii=False)
        if str(ROOT) in s:
            notes.append(f"{where}: output contains this checkout's path (stored as <repo>)")
            s = s.replace(str(ROOT), '<repo>')
        if _SECONDS.search(s): s = _SECONDS.sub(lambda m: m.group(1) + '…', s)
        o = json.loads(s)
        keep.append(o)
    return keep

def stored_outputs(nb: Path, ran: dict[int, list], notes: list) -> dict:
    "The notebook `nb` (JSON) with the outputs of the cells that ran replaced by sanitised `ran` outputs."
    d = json.loads(nb.read_text(encoding='utf-8'))
    for i, outs in ran.items():
        c = d['cells'][i]
        if c['cell_type'] == 'code': c['outputs'] = _sanitise(outs, notes, f"{nb.name} cell {i}")
    return d

def save(nbs: list[Path], workers: int = 2) -> list[str]:
    "Execute `nbs`, store their outputs, clean them as nbdev_clean does; return the notes (stderr, paths, errors)."
    from nbdev.clean import clean_nb
    from execnb.nbio import write_nb
    notes = []
    def one(nb):
        ran = execute(nb)
        d = stored_outputs(nb, ran, notes)
        for i in ran:
            if any(o.get('output_type') == 'error' for o in d['cells'][i].get('outputs', [])):
                notes.append(f"{nb.name} cell {i}: ERROR output stored (the notebook fails; --check will fail)")
        clean_nb(d, clear_all=False, allowed_metadata_keys=[], allowed_cell_metadata_keys=[], clean_ids=True)
        write_nb(d, nb)
        return nb.name
    with ThreadPoolExecutor(workers) as ex:
        for name in ex.map(one, nbs): print(f'saved {name}', flush=True)
    return notes

# ---------------------------------------------------------------- comparison

_NUM = re.compile(r'(?<![\w.])[-+−]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w])|\bnan\b|\binf\b')

def _ulp(tok: str) -> float:
    "One unit in the last printed digit of the number `tok`."
    t = tok.lstrip('-+−'); m, _, e = t.lower().partition('e')
    dec = len(m.split('.')[1]) if '.' in m else 0
    return 10.0**(-dec + (int(e) if e else 0))

def _num(tok: str) -> float: return float(tok.replace('−', '-'))

def normalise(text: str) -> tuple[str, list[str]]:
    "`text` with every number replaced by `#` and whitespace collapsed, and the numbers (as printed)."
    toks = _NUM.findall(text)
    return re.sub(r'\s+', ' ', _NUM.sub('#', text)).strip(), toks

def numbers_agree(a: str, b: str, rtol: float = 1e-6, atol: float = 1e-12) -> bool:
    "Whether printed numbers `a` and `b` agree: rtol of the larger, plus one unit in the last digit printed."
    x, y = _num(a), _num(b)
    if math.isnan(x) or math.isnan(y): return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y): return x == y
    if abs(x) < atol and abs(y) < atol: return True
    rounding = 0. if _is_int(a) and _is_int(b) else (_ulp(a) + _ulp(b))/2   # each printed value is within ½ ulp
    return abs(x - y) <= rtol*max(abs(x), abs(y)) + rounding

def _is_int(tok: str) -> bool: return re.fullmatch(r'[-+−]?\d+', tok) is not None

def _strip_html(h: str) -> str:
    h = re.sub(r'<(script|style)\b.*?</\1>', ' ', h, flags=re.S|re.I)
    import html
    return html.unescape(re.sub(r'<[^>]+>', ' ', h))

def summarise(outputs: list) -> tuple[list[str], int, list[str]]:
    "(text pieces, number of figures, error names) of a cell's outputs; stderr ignored."
    texts, figs, errs = [], 0, []
    for o in outputs:
        t = o.get('output_type')
        if t == 'error': errs.append(f"{o.get('ename')}: {o.get('evalue')}"); continue
        if t == 'stream':
            if o.get('name') == 'stdout': texts.append(_text(o.get('text', '')))
            continue
        data = o.get('data', {})
        if any(k.startswith('image/') for k in data): figs += 1; continue
        for k in ('text/markdown', 'text/html', 'text/latex', 'text/plain'):   # the richest text a reader sees
            if k in data:
                v = _text(data[k]); texts.append(_strip_html(v) if k == 'text/html' else v); break
    return texts, figs, errs

def compare_cell(stored: list, fresh: list, rtol: float = 1e-6, atol: float = 1e-12) -> list[str]:
    "Why the stored outputs of one cell are not current with the fresh ones (empty when they are)."
    st, sf, se = summarise(stored); ft, ff, fe = summarise(fresh)
    why = []
    if se: why.append(f"stored error output ({se[0]})")
    if fe: return why + [f"the code raises ({fe[0]})"]
    if (ft or ff) and not (st or sf or se): return why + ['output missing (the code produces one; none is stored)']
    if sf != ff: why.append(f"{ff} figure(s) produced, {sf} stored")
    (a, an), (b, bn) = normalise('\n'.join(st)), normalise('\n'.join(ft))
    if a != b: why.append(f"text differs: stored {a[:200]!r} vs now {b[:200]!r}")
    elif len(an) != len(bn): why.append("a different count of numbers")
    else:
        bad = [(x, y) for x, y in zip(an, bn) if not numbers_agree(x, y, rtol, atol)]
        if bad: why.append(f"{len(bad)} number(s) changed beyond rtol {rtol:g}, e.g. stored {bad[0][0]} vs now {bad[0][1]}")
    return why

def check_nb(nb: Path, rtol: float = 1e-6, atol: float = 1e-12) -> list[str]:
    "The problems of `nb`'s stored outputs against a fresh execution."
    ran = execute(nb)
    d = json.loads(nb.read_text(encoding='utf-8'))
    notes, probs = [], []
    for i, outs in sorted(ran.items()):
        c = d['cells'][i]
        if c['cell_type'] != 'code': continue
        fresh = _sanitise(outs, notes, '')
        for w in compare_cell(c.get('outputs', []), fresh, rtol, atol):
            probs.append(f"{nb.name} cell {i} ({_text(c['source']).strip().splitlines()[-1][:60] if _text(c['source']).strip() else ''}): {w}")
    for i, c in enumerate(d['cells']):   # an error stored in a cell that did not run now (e.g. after a failing cell)
        if c['cell_type'] == 'code' and i not in ran and any(o.get('output_type') == 'error' for o in c.get('outputs', [])):
            probs.append(f"{nb.name} cell {i}: stored error output")
    return probs

def check(nbs: list[Path], workers: int = 2, rtol: float = 1e-6, atol: float = 1e-12) -> list[str]:
    "Check every notebook in `nbs`; return all problems."
    def one(nb):
        try: return check_nb(nb, rtol, atol)
        except Exception as e: return [f"{nb.name}: {e}"]
    with ThreadPoolExecutor(workers) as ex: return [p for ps in ex.map(one, nbs) for p in ps]

def notebooks(names: list[str]) -> list[Path]:
    "The notebooks named (paths or stems in nbs/), or every notebook in nbs/."
    if not names: return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    out = []
    for n in names:
        p = Path(n)
        if not p.exists(): p = NBS/(n if n.endswith('.ipynb') else n + '.ipynb')
        if not p.exists(): raise SystemExit(f"nb: no notebook {n!r}")
        out.append(p.resolve())
    return out

def main(argv=None):
    if argv and argv[0] == '--_child': return _execute_child(*argv[1:3])
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument('--save', action='store_true', help='execute and store the outputs, then clean')
    g.add_argument('--check', action='store_true', help='execute and compare with the stored outputs')
    p.add_argument('nb', nargs='*', help='notebooks (default: every notebook in nbs/)')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--rtol', type=float, default=1e-6)
    p.add_argument('--atol', type=float, default=1e-12)
    a = p.parse_args(argv)
    nbs = notebooks(a.nb)
    if a.save:
        notes = save(nbs, a.workers)
        for n in notes: print('note:', n)
        return 1 if any('ERROR' in n for n in notes) else 0
    probs = check(nbs, a.workers, a.rtol, a.atol)
    for q in probs: print(q, file=sys.stderr)
    print(f"{len(nbs)} notebook(s) checked: " + (f"{len(probs)} stale or missing output(s); run `make nb-outputs`"
                                                 if probs else "every stored output is current"))
    return 1 if probs else 0

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
