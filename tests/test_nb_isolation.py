"`tools/nb_isolation.py`: a notebook that relies on torch's default dtype fails; one that names its dtype passes."
import importlib.util, json
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('nb_isolation', ROOT/'tools'/'nb_isolation.py')
iso = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(iso)


def _nb(path: Path, *sources: str) -> Path:
    cells = [dict(cell_type='code', id=f'c{i}', metadata={}, source=s, execution_count=None, outputs=[])
             for i, s in enumerate(sources)]
    path.write_text(json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    return path


def test_a_default_dtype_dependent_notebook_fails_and_an_explicit_one_passes(tmp_path, capsys):
    dtype = _nb(tmp_path/'dtype.ipynb', 'import torch', 'assert torch.ones(2).dtype == torch.float32')
    clean = _nb(tmp_path/'clean.ipynb', 'import torch', 'g = torch.Generator().manual_seed(0)',
                'x = torch.rand(3, generator=g, dtype=torch.float32)', 'assert x.dtype == torch.float32')
    assert iso.main([str(dtype), '--workers', '1']) == 1
    assert iso.main([str(clean), '--workers', '1']) == 0
    out = capsys.readouterr()
    assert 'FAIL dtype.ipynb' in out.out and 'ok   clean.ipynb' in out.out and 'AssertionError' in out.err


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit): iso.main([str(tmp_path/'missing.ipynb')])
    assert 'no such notebook' in capsys.readouterr().err
    with pytest.raises(SystemExit): iso.main(['--workers', '0'])
