#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb, the README's source: its markdown cells and the stored outputs of its shown code cells.

`nbdev_readme` (run by `nbdev_docs`) renders the executed index with Quarto; this needs nothing and gives the same
content: markdown cells in order, and for each code cell that is not `#| hide`, its stored outputs (markdown as
markdown, figures as PNG files under `README_files/`, printed text as a code block). The notebooks are committed
executed (`make nb-outputs`), so the README shows the same figure and table as the home page.
`python tools/make_readme.py --check` exits 1 when README.md (or a figure file) is stale.
"""
import base64, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGS = 'README_files'


def _hidden(src: str) -> bool:
    "A code cell the book does not show (`#| hide`, `#| include: false`)."
    return bool(re.search(r'^#\|\s*(hide|include:\s*false)\s*$', src, re.M))


def readme_parts():
    "(README text, {relative figure path: PNG bytes})."
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    parts, figs = [], {}
    for i, c in enumerate(nb['cells']):
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            parts.append(src.strip()); continue
        if c['cell_type'] != 'code' or _hidden(src): continue
        for j, o in enumerate(c.get('outputs', [])):
            data = o.get('data', {})
            if 'image/png' in data:
                name = f"{FIGS}/index_cell{i}_{j}.png"
                figs[name] = base64.b64decode(''.join(data['image/png']))
                parts.append(f"![]({name})")
            elif 'text/markdown' in data:
                parts.append(''.join(data['text/markdown']).strip())
            elif o.get('output_type') == 'stream' and o.get('name') == 'stdout':
                parts.append('```\n' + ''.join(o['text']).rstrip() + '\n```')
    # links to notebooks are relative to nbs/ on the home page, to the repository root in the README
    txt = re.sub(r"\]\((\d\d_[a-z_]+\.ipynb)\)", r"](nbs/\1)", '\n\n'.join(p for p in parts if p)) + '\n'
    return txt, figs


def readme_text() -> str:
    return readme_parts()[0]


if __name__ == '__main__':
    txt, figs = readme_parts()
    if '--check' in sys.argv:
        stale = [str(n) for n, b in figs.items() if not (ROOT/n).exists() or (ROOT/n).read_bytes() != b]
        ok = (ROOT/'README.md').read_text() == txt and not stale
        print('README.md is up to date' if ok else f"README.md is stale{' (figures: ' + ', '.join(stale) + ')' if stale else ''}: "
              f"run python tools/make_readme.py")
        sys.exit(0 if ok else 1)
    (ROOT/FIGS).mkdir(exist_ok=True)
    for old in (ROOT/FIGS).glob('index_cell*.png'):
        if f"{FIGS}/{old.name}" not in figs: old.unlink()
    for n, b in figs.items(): (ROOT/n).write_bytes(b)
    (ROOT/'README.md').write_text(txt)
    print(f'wrote README.md ({len(figs)} figure(s) in {FIGS}/)')
