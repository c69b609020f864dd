"""Data integrity (issue 15, "no silent wrong answers"): a damaged, mislabelled or misplaced data file or
checkpoint is refused with an error that names the file and says what is wrong; it never loads as
slightly wrong data. The shared data folder is read-only: every damaged file is a copy in tmp_path."""
import gzip, hashlib, os, pickle, shutil, signal, zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from setsens import checkpoint, cifar, data, kernels
from setsens.cifar import load_pretrained, cifar10, normalize
from setsens.core import data_dir

DATA = data_dir(must_exist=False)
CKPT = 'resnet56-4bfd9763.th'
SHA256 = '4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367'   # data README
needs_data = pytest.mark.skipif(DATA is None or not (DATA/CKPT).is_file() or not (DATA/'cifar10_subset.npz').is_file()
                                or not (DATA/'mnist').is_dir(), reason='real data folder (../shared/data or SETSENS_DATA) not found')


@contextmanager
def no_hang(seconds=20):
    "Turn a blocking open (a FIFO read as a file) into a test failure instead of a hung test run."
    def boom(*_): raise TimeoutError(f'blocked for {seconds} s (opened a FIFO?)')
    old = signal.signal(signal.SIGALRM, boom); signal.alarm(seconds)
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)


def _folder_with(tmp_path, name, data: bytes) -> Path:
    d = tmp_path/'data'; d.mkdir(exist_ok=True)
    (d/name).write_bytes(data)
    return d


# ------------------------------------------------------------------ checkpoints: hashes and CRCs

@needs_data
@pytest.mark.parametrize('damage', ['bit-flip', 'zeroed-tensor-bytes'])
def test_damaged_official_checkpoint_in_data_folder_is_refused(tmp_path, monkeypatch, damage):
    raw = bytearray((DATA/CKPT).read_bytes())
    if damage == 'bit-flip': raw[len(raw)//2] ^= 0x04
    else:   # overwrite the bytes of one tensor (the classifier's weights) with zeros: still a loadable pickle
        w = torch.load(DATA/CKPT, map_location='cpu', weights_only=True)['state_dict']['module.linear.weight']
        at = raw.index(w.numpy().tobytes()); raw[at:at + w.numel()*4] = bytes(w.numel()*4)
    d = _folder_with(tmp_path, CKPT, bytes(raw))
    got = hashlib.sha256(bytes(raw)).hexdigest()
    assert not got.startswith('4bfd9763')
    if damage == 'zeroed-tensor-bytes':   # the damage is real: torch alone would load it, with zero weights
        sd = torch.load(d/CKPT, map_location='cpu', weights_only=True)['state_dict']
        assert sd['module.linear.weight'].abs().max() == 0
    monkeypatch.setenv('SETSENS_DATA', str(d))
    for call in (lambda: load_pretrained(), lambda: load_pretrained(d), lambda: load_pretrained(d/CKPT)):
        with pytest.raises(ValueError) as e: call()
        msg = str(e.value)
        assert str(d/CKPT) in msg and 'integrity check failed' in msg, msg
        assert f'sha256 is {got}' in msg and f'expected {SHA256}' in msg, msg


@needs_data
def test_good_checkpoint_still_loads_and_hash_is_cached(monkeypatch):
    m = load_pretrained()
    assert sum(p.numel() for p in m.parameters()) == 853_018
    n = []
    real_new = hashlib.new
    monkeypatch.setattr(hashlib, 'new', lambda *a, **k: (n.append(a), real_new(*a, **k))[1])
    data._HASHES.clear(); checkpoint._VERIFIED.clear()
    for _ in range(3): load_pretrained()
    assert len(n) == 1, f'hashed {len(n)} times'   # (path, inode, size, mtime) cache


def test_fresh_rewrite_is_not_served_from_the_cache(tmp_path):
    "A file rewritten within the clock's tick keeps its mtime: recently modified files are re-hashed."
    p = tmp_path/'f.bin'; p.write_bytes(b'a'*100)
    h1 = data.file_digest(p)
    p.write_bytes(b'b'*100)   # same size, probably the same mtime
    assert data.file_digest(p) == hashlib.sha256(b'b'*100).hexdigest() != h1


def test_release_name_prefix_is_checked(tmp_path):
    sd = cifar.resnet20().state_dict()
    p = tmp_path/'x.th'; torch.save(sd, p)
    sha = hashlib.sha256(p.read_bytes()).hexdigest()
    good = tmp_path/f'resnet20-{sha[:8]}.th'; shutil.copy(p, good)
    load_pretrained(good, arch='resnet20')   # the name's promise holds: loads
    wrong = '0' * 8 if not sha.startswith('0' * 8) else '1' * 8
    bad = tmp_path/f'resnet20-{wrong}.th'; shutil.copy(p, bad)
    with pytest.raises(ValueError, match=rf"{bad}: integrity check failed: sha256 is {sha}, expected {wrong}…"):
        load_pretrained(bad, arch='resnet20')


def test_zip_checkpoint_with_zeroed_bytes_fails_crc(tmp_path):
    sd = cifar.resnet20().state_dict()
    p = tmp_path/'mine.pt'; torch.save(sd, p)
    assert zipfile.is_zipfile(p)
    b = bytearray(p.read_bytes()); w = sd['linear.weight'].numpy().tobytes()
    at = b.index(w); b[at:at + len(w)] = bytes(len(w)); p.write_bytes(bytes(b))
    assert torch.load(p, weights_only=True)['linear.weight'].abs().max() == 0   # torch alone loads the zeros
    with pytest.raises(ValueError, match=rf"{p}: corrupt checkpoint: the record '.*' fails its CRC-32 check"):
        load_pretrained(p, arch='resnet20')


@pytest.mark.parametrize('content', [b'\x80\x02garbage' + os.urandom(200), b'PK\x03\x04' + bytes(100)])
def test_garbage_checkpoint_names_the_file(tmp_path, content):
    p = tmp_path/'resnet56.th'; p.write_bytes(content)
    with pytest.raises((ValueError, pickle.UnpicklingError), match=str(p)):
        load_pretrained(p)


# ------------------------------------------------------------------ paths that are not files

def test_fifo_as_checkpoint_is_named_not_missing(tmp_path):
    f = tmp_path/'ck.th'; os.mkfifo(f)
    with no_hang(), pytest.raises(ValueError) as e: load_pretrained(f)
    assert 'is a FIFO (named pipe), not a checkpoint file' in str(e.value) and 'does not exist' not in str(e.value)
    with no_hang(), pytest.raises(ValueError, match='is a FIFO'): cifar._read_checkpoint(f)


def test_directory_as_checkpoint_is_named_not_missing(tmp_path, monkeypatch):
    d = tmp_path/'data'; (d/CKPT).mkdir(parents=True)   # the official name, but a folder
    with pytest.raises(ValueError, match=rf"'{d/CKPT}' is a directory, not a checkpoint file"):
        load_pretrained(d)
    monkeypatch.setenv('SETSENS_DATA', str(d))
    with pytest.raises(ValueError, match='is a directory, not a checkpoint file'):
        load_pretrained()
    with pytest.raises(ValueError, match=rf"{d/CKPT}: is a directory, not a checkpoint file"):
        cifar._read_checkpoint(d/CKPT)


def test_character_device_as_checkpoint():
    with no_hang(), pytest.raises(ValueError, match="'/dev/null' is a character device, not a checkpoint file"):
        load_pretrained('/dev/null')


def test_fifo_as_cifar_root(tmp_path):
    f = tmp_path/'cifar10_subset.npz'; os.mkfifo(f)
    with no_hang(), pytest.raises(ValueError, match='is a FIFO'):
        cifar10(f, n=2)
    with no_hang(), pytest.raises(ValueError, match='is a FIFO'):
        cifar10(tmp_path, n=2)


@needs_data
@pytest.mark.parametrize('target', ['file', 'missing'])
def test_setsens_data_not_a_folder(monkeypatch, tmp_path, target):
    p = DATA/'cifar10_subset.npz' if target == 'file' else tmp_path/'nowhere'
    monkeypatch.setenv('SETSENS_DATA', str(p))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))   # never fall back to a cached or downloaded copy
    said = 'points to a file, not a folder' if target == 'file' else 'does not exist'
    for call in (lambda: load_pretrained(), lambda: cifar10(n=2), lambda: cifar10(n=2, source='subset'),
                 lambda: kernels.load_mnist('test')):
        with pytest.raises(FileNotFoundError) as e: call()
        assert f"SETSENS_DATA={str(p)!r} {said}" in str(e.value) and 'unset and no' not in str(e.value), str(e.value)


# ------------------------------------------------------------------ CIFAR-10 subset: dtype, range, counts, format

def _subset(tmp_path, **kw) -> Path:
    a = dict(x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.array([0, 1, 2, 3]),
             x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.array([4, 5]))
    a.update(kw)
    p = tmp_path/'cifar10_subset.npz'; np.savez(p, **a)
    return p


def test_wellformed_small_subset_loads(tmp_path):
    X, Y = cifar10(_subset(tmp_path), split='train')
    assert X.shape == (4, 3, 32, 32) and Y.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize('kw,msg', [
    (dict(x_train=np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)),
     r'x_train has dtype float32 with values in \[.*\], i.e. images already scaled to \[0, 1\]; expected uint8'),
    (dict(x_train=np.zeros((4, 32, 32, 3), np.int64)), 'x_train has dtype int64'),
    (dict(y_train=np.array([0, 17, 2, 3])), r'y_train holds 1 label\(s\) outside 0–9 \(there are 10 classes\), e.g. 17 at row 1'),
    (dict(y_train=np.array([0, 1, -2, 3])), r'outside 0–9 .*e.g. -2 at row 2'),
    (dict(y_train=np.array([0, 1, 2])), '4 images in x_train but 3 labels in y_train'),
    (dict(y_train=np.array([0., 1., 2., 3.])), 'y_train has dtype float64; expected integer class labels'),
    (dict(x_train=np.zeros((4, 3, 32, 32), np.uint8)), r'x_train has shape \(4, 3, 32, 32\); expected \(n, 32, 32, 3\)'),
], ids=['float01', 'int64-images', 'label-17', 'label-minus-2', 'count-4-vs-3', 'float-labels', 'chw'])
def test_bad_subset_arrays(tmp_path, kw, msg):
    p = _subset(tmp_path, **kw)
    for call in (lambda: cifar10(p, split='train'), lambda: cifar10(p, split='train', n=2), lambda: cifar10(tmp_path, split='train', n=1)):
        with pytest.raises(ValueError, match=msg) as e: call()
        assert str(p) in str(e.value)
    cifar10(p, split='test')   # the other split is fine


def test_subset_format_errors_name_the_file(tmp_path):
    good = _subset(tmp_path).read_bytes()
    p = tmp_path/'cifar10_subset.npz'
    p.write_bytes(good[:len(good)//2])                                # cut short
    with pytest.raises(ValueError, match=rf'{p}: unreadable file \(the CIFAR-10 subset .*BadZipFile'): cifar10(p)
    b = bytearray(good); i = b.index(b'\x00' * 64, 200); b[i + 10] ^= 0xff; p.write_bytes(bytes(b))  # a flipped pixel byte
    with pytest.raises(ValueError, match=rf'{p}: unreadable .*CRC'): cifar10(p)
    np.savez(p, x_train=np.zeros((4, 32, 32, 3), np.uint8))          # no y_train
    with pytest.raises(ValueError, match=rf"{p}: unreadable .*KeyError.*no array \['y_train'\]"): cifar10(p)
    np.savez(p, x_train=np.array([{'a': 1}] * 4, dtype=object), y_train=np.arange(4))   # pickled objects
    with pytest.raises(ValueError, match=rf'{p}: unreadable'): cifar10(p)
    q = tmp_path/'arr.npy'; np.save(q, np.zeros(3))
    with pytest.raises(ValueError, match=rf'{q}: is a single .npy array, not an .npz archive'): cifar10(q)
    p.write_bytes(b'')
    with pytest.raises(ValueError, match=rf'{p}: unreadable'): cifar10(p)


def test_normalize_refuses_float_images():
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r'x: expected uint8 images \(pixel values 0–255\), got dtype torch.float32'):
        normalize(x)


# ------------------------------------------------------------------ MNIST

def _idx(path: Path, arr: np.ndarray):
    head = bytes([0, 0, 8, arr.ndim]) + b''.join(int(s).to_bytes(4, 'big') for s in arr.shape)
    with gzip.open(path, 'wb') as f: f.write(head + arr.astype(np.uint8).tobytes())


def test_mnist_counts_and_labels(tmp_path, monkeypatch):
    (tmp_path/'mnist').mkdir()
    np.savez(tmp_path/'mnist_train_prefix.npz', x_train=np.zeros((10, 28, 28), np.uint8), y_train=np.arange(7))
    with pytest.raises(ValueError, match=rf"{tmp_path/'mnist_train_prefix.npz'}: 10 images in x_train but 7 labels in y_train"):
        kernels.load_mnist('train', tmp_path)
    np.savez(tmp_path/'mnist_train_prefix.npz', x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.array([0, 10, 1]))
    with pytest.raises(ValueError, match=r'y_train holds 1 label\(s\) outside 0–9'):
        kernels.load_mnist('train', tmp_path)
    np.savez(tmp_path/'mnist_train_prefix.npz', x_train=np.ones((3, 28, 28), np.float64)/2, y_train=np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r'x_train has dtype float64 .*scaled to \[0, 1\]'):
        kernels.load_mnist('train', tmp_path)
    # idx files of one's own (no official MD5 applies): 10 images, 7 labels
    monkeypatch.setattr(kernels, 'MNIST_MD5', {})
    _idx(tmp_path/'mnist'/'t10k-images-idx3-ubyte.gz', np.zeros((10, 28, 28)))
    _idx(tmp_path/'mnist'/'t10k-labels-idx1-ubyte.gz', np.arange(7))
    with pytest.raises(ValueError, match='10 images in t10k-images-idx3-ubyte.gz but 7 labels in t10k-labels-idx1-ubyte.gz') as e:
        kernels.load_mnist('test', tmp_path)
    assert str(tmp_path/'mnist') in str(e.value)


@needs_data
def test_mnist_official_files_md5_and_gzip_errors(tmp_path):
    (tmp_path/'mnist').mkdir()
    for n in ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'): shutil.copy(DATA/'mnist'/n, tmp_path/'mnist')
    x, y = kernels.load_mnist('test', tmp_path)   # intact copies load
    assert x.shape == (10000, 28, 28) and len(y) == 10000
    lab = tmp_path/'mnist'/'t10k-labels-idx1-ubyte.gz'
    b = bytearray(lab.read_bytes()); b[len(b)//2] ^= 1; lab.write_bytes(bytes(b))
    with pytest.raises(ValueError, match=rf'{lab}: integrity check failed: md5 is [0-9a-f]{{32}}, expected ec29112dd5afa0611ce80d1b7f02629c'):
        kernels.load_mnist('test', tmp_path)
    own = tmp_path/'mnist'/'mine-idx1-ubyte.gz'
    own.write_bytes((DATA/'mnist'/'t10k-labels-idx1-ubyte.gz').read_bytes()[:3000])   # cut short: EOFError inside gzip
    with pytest.raises(ValueError, match=rf'{own}: unreadable idx file: EOFError'):
        kernels._read_idx(own)
    own.write_bytes(b'not gzip at all')
    with pytest.raises(ValueError, match=rf'{own}: unreadable idx file: BadGzipFile'):
        kernels._read_idx(own)
