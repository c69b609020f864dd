"""Bad input: files (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""
import math, os, pickle

import pytest
import torch

from setsens.core import data_dir

from bad_inputs_common import DATA, CKPT, needs_data, raises


# ================================================================ setsens.core / setsens.cifar: files and checkpoints

def test_data_dir_missing_path():
    with raises(FileNotFoundError, "path: data folder '/nonexistent/setsens-data' does not exist"):
        data_dir('/nonexistent/setsens-data')


def test_data_dir_bad_env(monkeypatch):
    monkeypatch.setenv('SETSENS_DATA', '/nonexistent/env-data')
    with raises(FileNotFoundError, "SETSENS_DATA='/nonexistent/env-data' is not a folder"):
        data_dir()


def test_load_pretrained_missing_path():
    from setsens.cifar import load_pretrained
    with raises(FileNotFoundError, "path: checkpoint '/nonexistent/resnet56.th' does not exist"):
        load_pretrained('/nonexistent/resnet56.th')


def test_cifar10_missing_root():
    from setsens.cifar import cifar10
    with raises(FileNotFoundError, "cifar10_subset.npz not found in '/nonexistent/cifar'"):
        cifar10('/nonexistent/cifar', source='subset', n=2)


@pytest.mark.parametrize('kw,exc,msg', [
    (dict(n=0), ValueError, 'n: expected a positive integer or None, got 0'),
    (dict(split='valid'), ValueError, "split: expected 'train' or 'test'"),
    (dict(n=2, dtype=torch.int32), TypeError, 'dtype: expected a floating torch dtype'),
], ids=['n-0', 'split', 'dtype-int'])
def test_cifar10_bad_args(kw, exc, msg):
    from setsens.cifar import cifar10
    with raises(exc, msg):
        cifar10(**kw)


def test_load_pretrained_bad_arch():
    from setsens.cifar import load_pretrained
    with raises(ValueError, "arch: expected one of"):
        load_pretrained(arch='resnet57')


def test_checkpoint_wrong_keys(tmp_path):
    from setsens.cifar import load_pretrained
    torch.save({'fc.weight': torch.ones(10, 64)}, tmp_path/'ck.th')
    with pytest.raises(ValueError, match=r'missing keys: conv1\.weight.*unexpected keys: fc\.weight'):
        load_pretrained(tmp_path/'ck.th')


def test_checkpoint_not_a_state_dict(tmp_path):
    from setsens.cifar import load_pretrained
    torch.save([torch.ones(2)], tmp_path/'ck.th')
    with raises(ValueError, "expected a state dict (name → tensor)"):
        load_pretrained(tmp_path/'ck.th')


class _RunsCode:
    "Unpickling this calls os.system(touch marker): the arbitrary-code payload weights_only must refuse."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('wrap', ['bare', 'in-state-dict'])
def test_checkpoint_with_code_is_refused(tmp_path, wrap):
    from setsens.cifar import load_pretrained
    marker = tmp_path/'code-ran'
    obj = _RunsCode(marker) if wrap == 'bare' else {'state_dict': {'conv1.weight': torch.ones(1)}, 'x': _RunsCode(marker)}
    with open(tmp_path/'ck.th', 'wb') as f: pickle.dump(obj, f, protocol=2)   # torch.load's own protocol
    with raises(pickle.UnpicklingError, 'refused to load'):
        load_pretrained(tmp_path/'ck.th')
    with pytest.raises(pickle.UnpicklingError):       # torch's own guarantee, which setsens relies on
        torch.load(tmp_path/'ck.th', weights_only=True)
    assert not marker.exists(), 'the pickled payload ran'


@needs_data
@pytest.mark.parametrize('size', ['empty', 'truncated'])
def test_checkpoint_truncated(tmp_path, size):
    """A truncated or empty file (an interrupted copy): the error must name the file and say it is
    unreadable. At the time of writing both raise a bare EOFError with an empty message."""
    from setsens.cifar import load_pretrained
    raw = (DATA/CKPT).read_bytes()
    bad = tmp_path/'resnet56.th'
    bad.write_bytes(b'' if size == 'empty' else raw[:5000])
    with raises((ValueError, pickle.UnpicklingError), str(bad)):
        load_pretrained(bad)


@needs_data
def test_checkpoint_with_nan_weights(tmp_path):
    """A checkpoint whose tensors are NaN loads silently at the time of writing (and `evaluate` then
    reports a NaN loss); it should be refused with a message naming the file and the tensor."""
    from setsens.cifar import load_pretrained
    sd = torch.load(DATA/CKPT, map_location='cpu', weights_only=True)['state_dict']
    sd = {k: (v * math.nan if v.is_floating_point() and k.endswith('linear.weight') else v) for k, v in sd.items()}
    torch.save({'state_dict': sd}, tmp_path/'resnet56.th')
    with raises(ValueError, 'NaN'):
        load_pretrained(tmp_path/'resnet56.th')


def test_evaluate_train_mode():
    from setsens.cifar import resnet20, evaluate
    with raises(ValueError, 'call model.eval()'):
        evaluate(resnet20(), torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
