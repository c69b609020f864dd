"""setsens.linalg: the dense minimum-norm solve against torch.linalg.pinv/lstsq (float64), Lanczos against eigvalsh,
and the names that moved here keep importing from their old modules."""
import warnings
import pytest
import torch
from setsens.linalg import minnorm_solve, lanczos, LinearOperator, IdentityOperator, HessianOperator, MixedOperator

from problems import sym_matrix  # shared: tests/problems.py
F64 = torch.float64


def rhs(p, k, seed): return torch.randn(p, k, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize('p,r,cond,indef,seed', [(30, 30, 1e2, False, 0), (40, 25, 1e3, True, 1), (60, 10, 1e6, True, 2),
                                                 (5, 1, 1., False, 3)])
def test_minnorm_solve_is_the_pseudo_inverse_solve(p, r, cond, indef, seed):
    A, B = sym_matrix(p, r, cond, seed=seed, indef=indef), rhs(p, 4, seed + 10)   # B has a part outside range A when r < p
    X, info = minnorm_solve(A, B)
    ref = torch.linalg.pinv(A) @ B                                                    # SVD, not eigh
    ls = torch.linalg.lstsq(A, B, rcond=p*torch.finfo(F64).eps, driver='gelsd').solution
    scale = float(ref.norm())
    assert float((X - ref).norm()) <= 1e-9*scale and float((X - ls).norm()) <= 1e-9*scale
    assert info['rank'] == r
    ev = torch.linalg.eigvalsh(A)
    assert info['eig_min'] == pytest.approx(float(ev[0]), abs=1e-12) and info['eig_max'] == pytest.approx(float(ev[-1]), abs=1e-12)
    x1, _ = minnorm_solve(A, B[:, 2])                                                 # a vector: one column
    assert x1.shape == (p,) and float((x1 - X[:, 2]).norm()) <= 1e-12*scale


def test_minnorm_solve_cutoff_as_pinv():
    A = sym_matrix(20, 20, 1e12, seed=4)                                              # eigenvalues down to 1e-12
    B = rhs(20, 2, 5)
    for rtol in (1e-4, 1e-8, 0.):
        X, info = minnorm_solve(A, B, rtol=rtol)
        ref = torch.linalg.pinv(A, rtol=rtol, hermitian=True) @ B
        assert float((X - ref).norm()) <= 1e-9*float(ref.norm())
        assert info['rank'] == int((torch.linalg.eigvalsh(A).abs() > rtol).sum())


def test_minnorm_solve_float32_and_zero():
    A, B = sym_matrix(15, 8, 10., seed=6), rhs(15, 1, 7)
    X32, _ = minnorm_solve(A.float(), B.float())
    assert X32.dtype == torch.float32
    assert float((X32.double() - torch.linalg.pinv(A) @ B).norm()) <= 1e-4*float((torch.linalg.pinv(A) @ B).norm())
    X0, info = minnorm_solve(torch.zeros(4, 4, dtype=F64), torch.ones(4, dtype=F64))
    assert torch.equal(X0, torch.zeros(4, dtype=F64)) and info['rank'] == 0


@pytest.mark.parametrize('call,err,msg', [
    (lambda A, B: minnorm_solve(A.tolist(), B), TypeError, 'A: expected a torch.Tensor'),
    (lambda A, B: minnorm_solve(A[:, :3], B), ValueError, 'A: must be square'),
    (lambda A, B: minnorm_solve(A, B[:3]), ValueError, 'B: expected 6 rows'),
    (lambda A, B: minnorm_solve(A + torch.triu(torch.ones_like(A), 1), B), ValueError, 'A: is not symmetric'),
    (lambda A, B: minnorm_solve(A, B.float()), ValueError, 'A, B: different dtypes'),
    (lambda A, B: minnorm_solve(A.half(), B.half()), TypeError, 'A: half precision'),
    (lambda A, B: minnorm_solve(A.to(torch.complex128), B), TypeError, 'A: expected a real floating dtype'),
    (lambda A, B: minnorm_solve(A, B, rtol=-1.), ValueError, 'rtol: must be >= 0'),
    (lambda A, B: minnorm_solve(A*float('nan'), B), ValueError, 'A: contains NaN'),
])
def test_minnorm_solve_bad_input(call, err, msg):
    A, B = sym_matrix(6, 4, seed=8), rhs(6, 2, 9)
    with pytest.raises(err, match=msg.replace('(', r'\(')): call(A, B)


def test_lanczos_ritz_values():
    A = sym_matrix(25, 25, 1e2, seed=11, indef=True)
    ev = torch.linalg.eigvalsh(A)
    theta, m = lanczos(lambda v: A @ v, 25, 25, F64, 'cpu')
    assert m == 25 and float((theta - ev).abs().max()) < 1e-10
    theta, m = lanczos(lambda v: A @ v, 25, 8, F64, 'cpu')
    assert m == 8 and ev[0] <= theta[0] + 1e-12 and theta[-1] <= ev[-1] + 1e-12   # Ritz values lie inside the spectrum
    g = torch.get_rng_state()
    lanczos(lambda v: A @ v, 25, 5, F64, 'cpu', seed=3)
    assert torch.equal(g, torch.get_rng_state())                                      # the global RNG is not touched


def test_moved_names_still_import():
    import setsens.risk as risk, setsens.krylov as krylov
    from setsens.risk import LinearOperator as L2, HessianOperator as H2, MixedOperator as M2, IdentityOperator as I2
    from setsens.krylov import lanczos as l2
    assert (L2, H2, M2, I2) == (LinearOperator, HessianOperator, MixedOperator, IdentityOperator)
    assert l2 is lanczos and krylov._lanczos is lanczos
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                                 # re-exported, not deprecated
        assert risk.LinearOperator is LinearOperator
