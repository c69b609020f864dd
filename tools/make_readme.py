#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb, the README's source (its markdown cells, in order).

`nbdev_readme` needs Quarto; this needs nothing. Code cells (the figure, the live table) stay on the
documentation home page only. `python tools/make_readme.py --check` exits 1 when README.md is stale.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def readme_text() -> str:
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    parts = [''.join(c['source']).strip() for c in nb['cells'] if c['cell_type'] == 'markdown']
    # the home page's "One picture" section describes a figure drawn by code: the README links to the book instead
    parts = [p for p in parts if not p.startswith('## One picture')]
    # links to notebooks are relative to nbs/ on the home page, to the repository root in the README
    return re.sub(r"\]\((\d\d_[a-z_]+\.ipynb)\)", r"](nbs/\1)", '\n\n'.join(parts)) + '\n'

if __name__ == '__main__':
    txt = readme_text()
    if '--check' in sys.argv:
        ok = (ROOT/'README.md').read_text() == txt
        print('README.md is up to date' if ok else 'README.md is stale: run python tools/make_readme.py')
        sys.exit(0 if ok else 1)
    (ROOT/'README.md').write_text(txt)
    print('wrote README.md')
