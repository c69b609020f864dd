#!/usr/bin/env python
"""Build the documentation book as static HTML without Quarto.

Quarto (which `nbdev_docs` needs) cannot be installed everywhere. This script executes every
notebook in `nbs/` (each in its own process, with execnb, the executor `nbdev_test` uses; cells
flagged `slow`/`gpu`/`notest` are skipped and say so), converts them to HTML with nbconvert, serves
MathJax from a local copy (jupyter-server-mathjax, configured for the STIX-Web fonts it ships) so formulas
render offline, and adds the sidebar of `nbs/sidebar.yml` to every page, with the page's own contents under
it. As nbdev/Quarto do, `show_doc` cells show their output only and links to `.ipynb` notebooks become links
to their pages. `index.ipynb` becomes `index.html`.

    python tools/build_html_docs.py --out _site [--only 02_sets 20_toy] [--workers 2] [--full]

`--full` runs the notebooks at full size (without IN_TEST); the default is the CI sizes. `--stored` executes nothing
and renders the outputs committed in the notebooks (`make nb-outputs` stores them), which is what `nbdev_docs` shows.
"""
from __future__ import annotations
import argparse, html, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SKIP_FLAGS = {'slow', 'gpu', 'notest'}

def _directives(src: str) -> dict:
    out = {}
    for line in src.splitlines():
        m = re.match(r'^\s*#\s*\|\s*(\S+)(.*)$', line)
        if not m: break
        out[m.group(1)] = m.group(2).split()
    return out

def sidebar() -> list[tuple[str|None, list[str]]]:
    "Sections of nbs/sidebar.yml as (title, [notebook, ...])."
    import yaml
    y = yaml.safe_load((NBS/'sidebar.yml').read_text())
    secs = []
    for item in y['website']['sidebar']['contents']:
        if isinstance(item, str): secs.append((None, [item]))
        elif 'href' in item: secs.append((None, [item['href']]))
        else: secs.append((item['section'], [i['href'] if isinstance(i, dict) else i for i in item['contents']]))
    return secs

def sidebar_labels() -> dict:
    "Sidebar entries given a `text:` of their own in nbs/sidebar.yml (e.g. index.ipynb: 'Overview')."
    import yaml
    y = yaml.safe_load((NBS/'sidebar.yml').read_text())
    out = {}
    def walk(items):
        for it in items:
            if isinstance(it, dict) and 'href' in it and 'text' in it: out[it['href']] = it['text']
            elif isinstance(it, dict) and 'contents' in it: walk(it['contents'])
    walk(y['website']['sidebar']['contents'])
    return out

def execute(nb_path: Path, dest: Path, full: bool=False) -> tuple[str, float, str]:
    "Execute `nb_path` into `dest` in a fresh process; return (name, seconds, error text)."
    code = f"""
import os, sys
{'' if full else "os.environ['IN_TEST'] = '1'"}
os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
import re
SKIP = {sorted(SKIP_FLAGS)!r}
def flags(src):
    out = set()
    for line in src.splitlines():
        m = re.match(r'^\\s*#\\s*\\|\\s*(\\S+)', line)
        if not m: break
        out.add(m.group(1))
    return out
nb = read_nb({str(nb_path)!r})
os.chdir({str(nb_path.parent)!r})
def pre(cell):
    if cell.cell_type != 'code': return True
    if 'nbdev_export(' in cell.source: return True
    f = flags(cell.source)
    if f & set(SKIP):
        cell.outputs = [dict(output_type='stream', name='stdout',
                             text='[not executed in this build: cell flagged ' + ', '.join(sorted(f & set(SKIP))) + ']\\n')]
        return True
    return False
sh = CaptureShell()
err = ''
try: sh.run_all(nb, exc_stop=True, preproc=pre)
except Exception as e: err = f'{{type(e).__name__}}: {{e}}'
write_nb(nb, {str(dest)!r})
if err: print('ERROR', err); sys.exit(1)
"""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    return nb_path.stem, time.perf_counter() - t0, ('' if r.returncode == 0 else (r.stdout + r.stderr)[-3000:])

def _title(nb: dict, fallback: str) -> tuple[str, str]:
    for c in nb['cells']:
        if c['cell_type'] == 'markdown':
            src = ''.join(c['source'])
            m = re.search(r'^#\s+(.+)$', src, re.M)
            if m:
                sub = re.search(r'^>\s*(.+)$', src, re.M)
                return m.group(1).strip(), (sub.group(1).strip() if sub else '')
    return fallback, ''

def _page_href(nbname: str) -> str:
    return 'index.html' if nbname == 'index.ipynb' else nbname.replace('.ipynb', '.html')

def _is_show_doc(src: str) -> bool:
    "A cell whose code is only `show_doc(...)` calls: nbdev (and this build) shows its output, not its input."
    lines = [l for l in src.splitlines() if l.strip() and not re.match(r'^\s*#', l)]
    return bool(lines) and all(re.match(r'^\s*show_doc\(', l) for l in lines)

def link_ipynb(html_text: str) -> str:
    """Point relative links to notebooks (`20_toy.ipynb`, `20_toy.ipynb#anchor`) at their pages, as Quarto does:
    the notebooks link to each other's `.ipynb` (which works on GitHub) and the book to the `.html`."""
    def sub(m):
        target, anchor = m.group(2), m.group(3) or ''
        if re.match(r'^[a-z][a-z0-9+.-]*:', target) or target.startswith('/'): return m.group(0)  # absolute URL
        name = target.rsplit('/', 1)[-1]
        return f'{m.group(1)}{_page_href(name)}{anchor}"'
    return re.sub(r'(<a\s[^>]*?href=")([^"#]*?\.ipynb)(#[^"]*)?"', sub, html_text)

def contents(html_text: str) -> list[tuple[int, str, str]]:
    "The page's h2/h3 headings as (level, id, text), for the in-page table of contents."
    out = []
    for m in re.finditer(r'<h([23]) id="([^"]+)"[^>]*>(.*?)</h\1>', html_text, re.S):
        text = re.sub(r'<a class="anchor-link".*?</a>', '', m.group(3), flags=re.S)
        text = html.unescape(re.sub(r'<[^>]+>', '', text)).strip()
        if text: out.append((int(m.group(1)), m.group(2), text))
    return out

# MathJax 2 as jupyter-server-mathjax ships it has the STIX-Web fonts only; its default (webFont "TeX") is
# absent, and the fallback misplaces accents (hats and bars a line above the letter) and fails on primes
# ("[Math Processing Error]" for x'). Ask for the fonts that are there.
MATHJAX_FONTS = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: ["STIX-Web"], preferredFont: "STIX-Web", webFont: "STIX-Web", imageFont: null},
  SVG: {font: "STIX-Web"}, menuSettings: {renderer: "HTML-CSS"}
});
</script>
"""

def convert(executed: Path, out: Path, nav_html: str) -> dict:
    "Convert an executed notebook to HTML; return facts the docs test checks (title, images, math)."
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(executed), as_version=4)
    title, subtitle = _title(nb, executed.stem)
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code':
            d = _directives(c.source)
            if 'hide' in d or 'exporti' in d or 'nbdev_export(' in c.source: continue
            if 'default_exp' in d and len(c.source.strip().splitlines()) == 1: continue
            if 'hide_input' in d or 'echo:' in d and d['echo:'] == ['false'] or _is_show_doc(c.source):
                c.metadata.setdefault('tags', []).append('setsens-hide-input')
            else: c.source = '\n'.join(l for l in c.source.splitlines() if not re.match(r'^\s*#\s*\|', l)).strip('\n')
        cells.append(c)
    for c in cells:  # show_doc writes Quarto attributes ({target=...}) that plain markdown shows verbatim
        for o in c.get('outputs', []):
            if 'text/markdown' in o.get('data', {}):
                o['data']['text/markdown'] = re.sub(r'\{[^{}\n]*(target|style)=[^{}\n]*\}', '', o['data']['text/markdown'])
    nb.cells = cells
    n_img = sum(1 for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
                if 'data' in o and any(k.startswith('image/') for k in o['data']))
    has_math = any(c.cell_type == 'markdown' and re.search(r'\$[^$\n]+\$', c.source) for c in nb.cells)
    nb.metadata['title'] = title
    from nbconvert.preprocessors import TagRemovePreprocessor
    exp = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    exp.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'setsens-hide-input'}, enabled=True), enabled=True)
    exp.mathjax_url = 'mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full'
    body, _ = exp.from_notebook_node(nb, resources={'metadata': {'name': title}})
    body = body.replace('<script src="mathjax/MathJax.js', MATHJAX_FONTS + '<script src="mathjax/MathJax.js', 1)
    body = link_ipynb(body)
    toc = contents(body)
    style = ('<style>.setsens-nav{position:fixed;top:0;left:0;width:230px;height:100%;overflow:auto;box-sizing:border-box;'
             'padding:12px;font:14px sans-serif;background:#f7f7f9;border-right:1px solid #ddd}'
             '.setsens-nav h4{margin:14px 0 4px;font-size:13px;color:#555}.setsens-nav a{display:block;padding:2px 0}'
             '.setsens-nav a.current{font-weight:bold}.setsens-nav a.brand{font-size:16px;margin-bottom:4px}'
             '.setsens-toc{margin:2px 0 6px 8px;padding-left:8px;border-left:2px solid #cdd;font-size:13px}'
             '.setsens-toc a{color:#345;padding:1px 0}.setsens-toc a.h3{padding-left:10px;font-size:12px}'
             'body{margin-left:250px!important}</style>')
    body = body.replace('</head>', style + '</head>', 1)
    toc_html = ''
    if toc:
        toc_html = ('<div class="setsens-toc" aria-label="On this page">' + ''.join(
            f'<a class="h{lvl}" href="#{html.escape(i, quote=True)}">{html.escape(t)}</a>' for lvl, i, t in toc) + '</div>')
    nav_html = nav_html.replace('<!--toc-->', toc_html)
    body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + nav_html, body, count=1)
    dest = out/_page_href(executed.stem + '.ipynb')
    dest.write_text(body)
    return dict(page=dest.name, title=title, subtitle=subtitle, images=n_img, math=has_math, contents=len(toc))

def _inline_code(text: str) -> str:
    return re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(text))

def nav(secs, current: str, titles: dict, labels: dict|None=None) -> str:
    "The sidebar: the site's name, then nbs/sidebar.yml's sections; under the current page, its contents."
    labels = labels or {}
    parts = ['<nav class="setsens-nav"><a class="brand" href="index.html"><b>setsens</b></a>']
    for sec, items in secs:
        if sec: parts.append(f'<h4>{html.escape(sec)}</h4>')
        for it in items:
            if it not in titles: continue
            cls = ' class="current"' if it == current else ''
            parts.append(f'<a{cls} href="{_page_href(it)}">{_inline_code(labels.get(it, titles[it]))}</a>')
            if it == current: parts.append('<!--toc-->')
    parts.append('</nav>')
    return ''.join(parts)

def stored(nb_path: Path, dest: Path) -> tuple[str, float, str]:
    "Copy `nb_path` with its stored outputs (as `nbdev_docs` renders it, without executing); the error text says when it has none."
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code' and not c['source'][:1] == ['#| export\n']]
    dest.write_text(json.dumps(nb))
    ok = any(c.get('outputs') for c in code) or not code
    return nb_path.name, 0., '' if ok else 'no stored outputs (run make nb-outputs)'

def build(out: Path, only: list[str]|None=None, workers: int=2, full: bool=False, use_stored: bool=False) -> dict:
    import nbformat
    import jupyter_server_mathjax
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    mj = Path(jupyter_server_mathjax.__file__).parent/'static'
    if not (out/'mathjax').exists(): shutil.copytree(mj, out/'mathjax')
    secs = sidebar()
    order = [it for _, items in secs for it in items]
    nbs = [NBS/n for n in order if (NBS/n).exists()]
    if only: nbs = [p for p in nbs if p.stem in only or p.name in only]
    work = out/'_executed'; work.mkdir(exist_ok=True)
    with ThreadPoolExecutor(workers) as ex:
        res = list(ex.map(lambda p: stored(p, work/p.name) if use_stored else execute(p, work/p.name, full), nbs))
    errors = {n: e for n, _, e in res if e}
    for n, s, e in res: print(f"  executed {n:<18} {s:6.1f} s {'FAILED' if e else ''}", flush=True)
    titles = {p.name: _title(json.loads((work/p.name).read_text()), p.stem)[0] for p in nbs if (work/p.name).exists()}
    labels = sidebar_labels()
    pages = []
    for p in nbs:
        if not (work/p.name).exists(): continue
        pages.append(convert(work/p.name, out, nav(secs, p.name, titles, labels)))
    manifest = dict(pages=pages, errors=errors)
    (out/'manifest.json').write_text(json.dumps(manifest, indent=1))
    return manifest

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', type=Path, default=ROOT/'_site')
    ap.add_argument('--only', nargs='*')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--full', action='store_true', help='run notebooks at full size (no IN_TEST)')
    ap.add_argument('--stored', action='store_true', help='do not execute: render the outputs stored in the notebooks (what nbdev_docs shows)')
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    m = build(a.out, a.only, a.workers, a.full, a.stored)
    print(f"built {len(m['pages'])} pages in {a.out} ({time.perf_counter() - t0:.0f} s)")
    for n, e in m['errors'].items(): print(f'--- {n} failed:\n{e}', file=sys.stderr)
    return 1 if m['errors'] else 0

if __name__ == '__main__':
    sys.exit(main())
