"Tests for setsens.checkpoint: integrity before unpickling, the check cache, strict loading, hash-checked download."
import math
import pytest
import torch
from torch import nn
from setsens.checkpoint import verify_checkpoint, read_checkpoint, load_state, download, check_finite_state
from setsens.data import file_digest


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_cache_is_per_expected_hash(tmp_path):
    "A file checked once without a hash is still checked when a hash is expected (the cache key holds the hash)."
    f = tmp_path/'n.pt'; torch.save(_net().state_dict(), f)
    verify_checkpoint(f)
    with pytest.raises(ValueError, match='integrity check failed'): verify_checkpoint(f, ('0'*64, 'a wrong hash'))
    h = file_digest(f)
    assert verify_checkpoint(f, (h, 'right')) == f and verify_checkpoint(f, (h, 'right')) == f


def test_round_trip_with_module_prefix_and_missing_counter(tmp_path):
    net = _net()
    sd = {'module.' + k: v for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked')}
    f = tmp_path/'n.pt'; torch.save({'state_dict': sd}, f)
    got = load_state(_net(), read_checkpoint(f)).state_dict()
    assert all(torch.equal(got[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match=r'shape mismatches \(checkpoint vs model\): 2.weight'):
        load_state(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 5)), sd)


def test_refusals(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): read_checkpoint(tmp_path/'none.pt')
    e = tmp_path/'empty.pt'; e.write_bytes(b'')
    with pytest.raises(ValueError, match='is empty'): read_checkpoint(e)
    lst = tmp_path/'list.pt'; torch.save([torch.ones(1)], lst)
    with pytest.raises(ValueError, match='expected a state dict'): read_checkpoint(lst)
    with pytest.raises(ValueError, match='x: checkpoint tensors contain NaN or Inf: b'):
        check_finite_state({'a': torch.ones(2), 'b': torch.tensor([math.inf]), 'i': torch.ones(1, dtype=torch.long)}, 'x: ')


def test_download_keeps_only_a_matching_file(tmp_path):
    src = tmp_path/'src.bin'; src.write_bytes(b'weights' * 1000)
    h = file_digest(src)
    download(src.as_uri(), tmp_path/'d'/'ok.bin', h[:10])
    assert (tmp_path/'d'/'ok.bin').read_bytes() == src.read_bytes()
    with pytest.raises(RuntimeError, match='the file was discarded'): download(src.as_uri(), tmp_path/'d'/'no.bin', 'f'*64)
    assert sorted(p.name for p in (tmp_path/'d').iterdir()) == ['ok.bin']


def test_cifar_uses_the_same_loader():
    import setsens.cifar
    assert setsens.cifar.load_state is load_state
