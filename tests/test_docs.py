"""The documentation book, built without Quarto and checked as a reader sees it.

Builds every notebook to HTML from its stored outputs (tools/build_html_docs.py --stored: what nbdev_docs shows;
CI checks before that the stored outputs are current), then checks each page twice:

- in the built HTML (no browser needed, so these always run): no markdown table left as a paragraph of raw
  `|` text, no link to a `.ipynb` file or to a page that is not there, no visible `show_doc(...)` input, no
  warning box (a `...Warning:` or a path into a machine's files in an stderr output), no error output;
- in headless Chromium (one run per page, which also writes the page's screenshot): the title, every figure
  present and decoded, math typeset by MathJax and no "[Math Processing Error]" or TeX error.

Screenshots go to a temporary folder (printed), or to SETSENS_DOCS_SHOTS when set (a CI artifact folder).
Chromium comes from Debian's `chromium` package, installed here when missing and possible; the browser test
is skipped, saying why, only where it cannot be. Set SETSENS_DOCS_SITE to a folder built earlier to check it
without rebuilding.
"""
import html, json, os, re, shutil, subprocess, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--allow-file-access-from-files', '--hide-scrollbars']

def _chromium():
    for n in ('chromium', 'chromium-browser'):
        if shutil.which(n): return shutil.which(n)
    if shutil.which('apt-get') and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        subprocess.run(['apt-get', 'update', '-q'], capture_output=True, env=env)
        subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium'], capture_output=True, env=env)
        return shutil.which('chromium')
    return None

@pytest.fixture(scope='module')
def chromium():
    c = _chromium()
    if c is None: pytest.skip("headless Chromium is not installed and cannot be installed here "
                              "(needs Debian's `chromium` package: apt-get install chromium)")
    return c

@pytest.fixture(scope='module')
def site():
    pre = os.environ.get('SETSENS_DOCS_SITE')
    if pre: return Path(pre)
    out = Path(tempfile.mkdtemp(prefix='setsens_site_'))
    # from the outputs stored in the notebooks (what nbdev_docs and GitHub show); CI checks first that they are
    # current (tools/nb_outputs.py --check), so executing every notebook a third time would check nothing more
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_html_docs.py'), '--out', str(out), '--stored'],
                       capture_output=True, text=True)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert (out/'manifest.json').exists(), r.stderr[-2000:]
    return out

def _pages(site):
    return json.loads((site/'manifest.json').read_text())['pages']

def test_build_has_no_errors(site):
    m = json.loads((site/'manifest.json').read_text())
    assert not m['errors'], f"notebooks failed while building the docs: {list(m['errors'])}"
    names = {p['page'] for p in m['pages']}
    assert 'index.html' in names and len(names) >= 3

# ---- checks on the built HTML -------------------------------------------------------------------------

def _text(fragment: str) -> str:
    return html.unescape(re.sub(r'<[^>]+>', '', fragment))

def raw_tables(page: str) -> list[str]:
    "Paragraphs holding a line that looks like a markdown table row (`| a | b |`): a table that did not render."
    out = []
    for p in re.findall(r'<p\b[^>]*>(.*?)</p>', page, re.S):
        rows = [l for l in _text(p).splitlines() if re.match(r'^\s*\|.*\|\s*$', l)]
        if rows: out.append(rows[0][:120])
    return out

def bad_links(page: str, site: Path) -> list[str]:
    "Links to `.ipynb` files, and relative links to files that are not in the built site."
    out = []
    for href in re.findall(r'<a\b[^>]*\bhref="([^"]*)"', page):
        target = html.unescape(href).split('#')[0].split('?')[0]
        if re.match(r'^[a-z][a-z0-9+.-]*:', target): continue  # http:, mailto:, data:
        if target.endswith('.ipynb'): out.append(href)
        elif target and not (site/target).exists(): out.append(href)
    return out

def visible_show_doc(page: str) -> int:
    "`show_doc` calls shown as code (nbconvert highlights the name as `<span class=\"n\">show_doc</span>`)."
    return len(re.findall(r'<span class="n">show_doc</span>', page))

_STDERR = re.compile(r'data-mime-type="application/vnd\.jupyter\.stderr"[^>]*>\s*<pre>(.*?)</pre>', re.S)
_MACHINE_PATH = re.compile(r'(?:^|[\s"\'(])/(?:[\w.+-]+/)+[\w.+-]+\.pyx?\b|site-packages|\b[A-Z]:\\')

def warning_boxes(page: str) -> list[str]:
    "stderr outputs that show a warning or a path into the machine's files (`/…/site-packages/…py:123: …Warning`)."
    out = []
    for box in _STDERR.findall(page):
        t = _text(box)
        if re.search(r'\b\w*Warning\b', t) or _MACHINE_PATH.search(t): out.append(t.strip()[:200])
    return out

def test_detectors():
    "The checks below catch what they are meant to (and not prose around it)."
    table = '<p>| a | b |\n|---|---|\n| 1 | 2 |</p>'
    assert raw_tables(table) and not raw_tables('<p>The norm |K| of\n|K| points is |x|.</p>')
    assert not raw_tables('<table><tr><td>|K|</td></tr></table><p>a | b</p>')
    assert bad_links('<a href="20_toy.ipynb">x</a><a href="21_dfcnn.ipynb#eq-12">y</a>', ROOT) == ['20_toy.ipynb', '21_dfcnn.ipynb#eq-12']
    assert bad_links('<a href="https://x.org/a.ipynb">x</a><a href="#sec">s</a><a href="tests/test_docs.py">t</a>', ROOT) == []
    assert bad_links('<a href="nothere.html">x</a>', ROOT) == ['nothere.html']
    assert visible_show_doc('<pre><span class="n">show_doc</span><span class="p">(</span></pre>') == 1
    warn = ('<div data-mime-type="application/vnd.jupyter.stderr" tabindex="0"><pre>/tmp/ci/.venv/lib/python3.11/'
            'site-packages/torch/jit/_script.py:1491: FutureWarning: deprecated\n</pre></div>')
    assert warning_boxes(warn) and not warning_boxes('<div data-mime-type="text/plain"><pre>Warning: fine</pre></div>')

def test_pages_static(site):
    "What a reader would see wrong in the HTML itself: raw tables, dead links, show_doc inputs, warnings."
    problems = {}
    for p in _pages(site):
        page = (site/p['page']).read_text()
        found = dict(raw_tables=raw_tables(page), bad_links=bad_links(page, site),
                     show_doc_inputs=visible_show_doc(page), warning_boxes=warning_boxes(page),
                     errors=page.count('data-mime-type="application/vnd.jupyter.error"'))
        found = {k: v for k, v in found.items() if v}
        if found: problems[p['page']] = found
    assert not problems, json.dumps(problems, indent=1, ensure_ascii=False)

# ---- checks in the browser ------------------------------------------------------------------------------

def _open(chromium, url: str, shot: Path) -> str:
    "Load `url` once: its DOM after scripts ran (MathJax included) and a screenshot."
    prof = tempfile.mkdtemp(prefix='chr_')
    try:
        return subprocess.run([chromium, *FLAGS, f'--user-data-dir={prof}', '--virtual-time-budget=20000',
                               '--window-size=1280,1800', f'--screenshot={shot}', '--dump-dom', url],
                              capture_output=True, text=True, timeout=180).stdout
    finally: shutil.rmtree(prof, ignore_errors=True)

def test_pages_in_browser(site, chromium):
    shots = Path(os.environ.get('SETSENS_DOCS_SHOTS') or tempfile.mkdtemp(prefix='setsens_shots_'))
    shots.mkdir(parents=True, exist_ok=True)
    print('screenshots in', shots)
    pages = _pages(site)
    with ThreadPoolExecutor(2) as ex:
        doms = list(ex.map(lambda p: _open(chromium, (site/p['page']).as_uri(), shots/(p['page'] + '.png')), pages))
    problems = []
    for p, dom in zip(pages, doms):
        title = re.search(r'<title>(.*?)</title>', dom, re.S)
        if not (title and title.group(1).strip() == p['title']):
            problems.append(f"{p['page']}: title {title and title.group(1)!r} != {p['title']!r}")
        if 'Traceback (most recent call last)' in dom or 'data-mime-type="application/vnd.jupyter.error' in dom:
            problems.append(f"{p['page']}: error output")
        imgs = re.findall(r'<img[^>]+src="data:image/(?:png|jpeg|svg\+xml)[^"]{200,}"', dom)
        if len(imgs) < p['images']:
            problems.append(f"{p['page']}: {len(imgs)} images in the page, {p['images']} figure outputs in the notebook")
        if p['math']:
            if not re.search(r'class="(MathJax_CHTML|MathJax|mjx-chtml)', dom): problems.append(f"{p['page']}: math not typeset")
            n_err = dom.count('[Math Processing Error]') + len(re.findall(r'<[^>]+class="(?:merror|MathJax_Error)"', dom))
            if n_err: problems.append(f"{p['page']}: {n_err} formulas failed ([Math Processing Error] or a TeX error)")
        if not (shots/(p['page'] + '.png')).exists() or (shots/(p['page'] + '.png')).stat().st_size < 10_000:
            problems.append(f"{p['page']}: blank screenshot")
    assert not problems, '\n'.join(problems)
