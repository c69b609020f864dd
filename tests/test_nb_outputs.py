"`tools/nb_outputs.py`: `--check` fails on a stale copy of a notebook and passes on a fresh one (a tiny synthetic notebook)."
import copy, importlib.util, json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('nb_outputs', ROOT/'tools'/'nb_outputs.py')
nbo = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(nbo)

def _cell(src, typ='code'):
    c = dict(cell_type=typ, id=f'c{abs(hash(src)) % 10**6:06d}', metadata={}, source=src)
    if typ == 'code': c.update(execution_count=None, outputs=[])
    return c

CELLS = [
    _cell('# Tiny\n> a synthetic notebook', 'markdown'),
    _cell('import os, math\nimport matplotlib.pyplot as plt'),
    _cell("print('in test:', os.environ.get('IN_TEST'))\nprint('pi/7 =', math.pi/7)"),      # 2: stdout with a number
    _cell("fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1], [1, 0]);"),               # 3: a figure
    _cell("from IPython.display import Markdown\nMarkdown('| a | b |\\n|---|---|\\n| 1.5 | x |')"),  # 4: a table
    _cell("import sys; print('warned', file=sys.stderr); 2**10"),                            # 5: stderr + result
    _cell("#| slow\nraise RuntimeError('a slow cell is skipped, as nbdev_test skips it')"),   # 6: skipped
    _cell("x = 1"),                                                                          # 7: no output
]

@pytest.fixture(scope='module')
def fresh(tmp_path_factory):
    "The synthetic notebook after `--save`: (path, its JSON, the notes)."
    d = tmp_path_factory.mktemp('nbo')
    (d/'settings.ini').write_text('[DEFAULT]\nlib_name = tiny\nnbs_path = .\ntst_flags = notest slow gpu\n')
    nb = d/'tiny.ipynb'
    nb.write_text(json.dumps(dict(cells=CELLS, metadata={}, nbformat=4, nbformat_minor=5)))
    notes = nbo.save([nb], workers=1)
    return nb, json.loads(nb.read_text()), notes

def _stale(fresh, edit):
    nb, d, _ = fresh
    d = copy.deepcopy(d); edit(d['cells'])
    p = nb.with_name('stale.ipynb'); p.write_text(json.dumps(d))
    return nbo.check_nb(p)

def test_save_stores_outputs(fresh):
    nb, d, notes = fresh
    c = d['cells']
    out2 = ''.join(o['text'] if isinstance(o['text'], str) else ''.join(o['text']) for o in c[2]['outputs'])
    assert 'in test: 1' in out2 and '0.4487989505' in out2           # IN_TEST is set, as nbdev_test sets it
    assert any('image/png' in o.get('data', {}) for o in c[3]['outputs'])
    assert any('text/markdown' in o.get('data', {}) for o in c[4]['outputs'])
    assert not any(o.get('name') == 'stderr' for o in c[5]['outputs']) and c[5]['outputs']   # stderr dropped, 1024 kept
    assert any('stderr' in n and 'cell 5' in n for n in notes)
    assert c[6]['outputs'] == [] and c[7]['outputs'] == []
    assert all(cc.get('execution_count') is None for cc in c if cc['cell_type'] == 'code')

def test_fresh_copy_passes(fresh):
    assert nbo.check_nb(fresh[0]) == []

def _set_text(cells, i, new):
    for o in cells[i]['outputs']:
        if o.get('output_type') == 'stream': o['text'] = new

def test_changed_number_fails(fresh):
    probs = _stale(fresh, lambda c: _set_text(c, 2, 'in test: 1\npi/7 = 0.4487999\n'))
    assert len(probs) == 1 and 'number' in probs[0] and 'cell 2' in probs[0]

def test_reformatted_number_passes(fresh):
    "The same value printed with fewer digits (or in another format) is not stale."
    assert _stale(fresh, lambda c: _set_text(c, 2, 'in test: 1\npi/7 = 4.488e-01\n')) == []

def test_missing_output_fails(fresh):
    def drop(c): c[2]['outputs'] = []
    probs = _stale(fresh, drop)
    assert len(probs) == 1 and 'missing' in probs[0]

def test_error_output_fails(fresh):
    def err(c): c[7]['outputs'] = [dict(output_type='error', ename='ValueError', evalue='boom', traceback=[])]
    probs = _stale(fresh, err)
    assert len(probs) == 1 and 'error' in probs[0] and 'cell 7' in probs[0]

def test_removed_figure_fails(fresh):
    def nofig(c): c[3]['outputs'] = [o for o in c[3]['outputs'] if 'image/png' not in o.get('data', {})] or \
                                    [dict(output_type='stream', name='stdout', text='')]
    probs = _stale(fresh, nofig)
    assert len(probs) == 1 and 'figure' in probs[0]

def test_table_compared_by_text(fresh):
    def edit(c):
        for o in c[4]['outputs']:
            if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = '| a | b |\n|---|---|\n| 1.5 | y |'
    probs = _stale(fresh, edit)
    assert len(probs) == 1 and 'text differs' in probs[0]

def test_code_that_now_raises_fails(tmp_path, fresh):
    nb, d, _ = fresh
    d = copy.deepcopy(d); d['cells'][7]['source'] = 'x = 1/0'
    p = tmp_path/'raises.ipynb'; p.write_text(json.dumps(d))
    (tmp_path/'settings.ini').write_text((nb.parent/'settings.ini').read_text())
    probs = nbo.check_nb(p)
    assert len(probs) == 1 and 'ZeroDivisionError' in probs[0]

@pytest.mark.parametrize('a,b,ok', [('0.1235', '0.12349999', True), ('0.1235', '0.1243', False), ('1e-17', '-3e-16', True),
                                    ('2.571', '2.882', False), ('100', '100.0000001', True), ('nan', 'nan', True), ('1', '2', False), ('89', '90', False), ('0.5', '0.50', True)])
def test_numbers_agree(a, b, ok):
    assert nbo.numbers_agree(a, b) is ok

def test_timings_and_paths_are_not_stored():
    notes = []
    out = nbo._sanitise([dict(output_type='stream', name='stdout',
                              text=f"KrylovInfo(iterations=3, seconds=0.0145) {{'seconds': 2.5}} at {nbo.ROOT}/nbs\n"),
                         dict(output_type='stream', name='stderr', text='UserWarning: x\n')], notes, 'nb cell 1')
    assert out == [dict(output_type='stream', name='stdout', text="KrylovInfo(iterations=3, seconds=…) {'seconds': …} at <repo>/nbs\n")]
    assert len(notes) == 2 and 'path' in notes[0] and 'stderr' in notes[1]

def test_saved_notebook_is_clean_and_settings_keep_outputs(fresh):
    "nbdev_clean (with this project's settings) leaves a saved notebook unchanged, outputs included: the CI sync check passes."
    import configparser
    from nbdev.clean import clean_nb
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    assert cfg['DEFAULT']['clear_all'] == 'False'
    nb, d, _ = fresh
    cleaned = copy.deepcopy(d)
    clean_nb(cleaned, clear_all=False, allowed_metadata_keys=cfg['DEFAULT']['allowed_metadata_keys'].split(),
             allowed_cell_metadata_keys=cfg['DEFAULT']['allowed_cell_metadata_keys'].split(), clean_ids=True)
    assert cleaned == d and any(c.get('outputs') for c in cleaned['cells'])
