"""The documentation book, built without Quarto and opened in headless Chromium.

Builds every notebook to HTML (tools/build_html_docs.py; CI sizes), then for each page checks in a
real browser: the title, no error outputs, every figure present and decoded, math typeset by MathJax.
Screenshots go to a temporary folder (printed). Chromium comes from Debian's `chromium` package,
installed here when missing and possible; the test is skipped, saying why, only where it cannot be.
Set SETSENS_DOCS_SITE to a folder built earlier to check it without rebuilding.
"""
import json, os, re, shutil, subprocess, sys, tempfile
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
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_html_docs.py'), '--out', str(out)],
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

def test_pages_in_browser(site, chromium):
    shots = Path(tempfile.mkdtemp(prefix='setsens_shots_'))
    print('screenshots in', shots)
    for p in _pages(site):
        url = (site/p['page']).as_uri()
        prof = tempfile.mkdtemp(prefix='chr_')
        dom = subprocess.run([chromium, *FLAGS, f'--user-data-dir={prof}', '--virtual-time-budget=20000',
                              '--dump-dom', url], capture_output=True, text=True, timeout=120).stdout
        subprocess.run([chromium, *FLAGS, f'--user-data-dir={prof}', '--virtual-time-budget=20000',
                        '--window-size=1280,1800', f'--screenshot={shots/(p["page"] + ".png")}', url],
                       capture_output=True, timeout=120)
        shutil.rmtree(prof, ignore_errors=True)
        title = re.search(r'<title>(.*?)</title>', dom, re.S)
        assert title and title.group(1).strip() == p['title'], f"{p['page']}: title {title and title.group(1)!r} != {p['title']!r}"
        assert 'Traceback (most recent call last)' not in dom and 'jp-RenderedText" data-mime-type="application/vnd.jupyter.error' not in dom, f"{p['page']}: error output"
        imgs = re.findall(r'<img[^>]+src="data:image/(?:png|jpeg|svg\+xml)[^"]{200,}"', dom)
        assert len(imgs) >= p['images'], f"{p['page']}: {len(imgs)} images in the page, {p['images']} figure outputs in the notebook"
        if p['math']:
            assert re.search(r'class="(MathJax_CHTML|MathJax|mjx-chtml)', dom), f"{p['page']}: math not typeset"
        assert (shots/(p['page'] + '.png')).stat().st_size > 10_000, f"{p['page']}: blank screenshot"
