"""Tests for setsens.sets: float64 oracles (scipy's directed_hausdorff, brute force, lstsq/pinv),
metric-axiom properties (hypothesis) and bad input."""
import math
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import directed_hausdorff

from setsens import sets
from setsens.sets import point_to_set_distance, excess, hausdorff, AffineSet

f64 = torch.float64


def brute_nn(X, Y):
    "Nearest-neighbour distances by direct float64 differences (no matrix-product shortcut)."
    X, Y = X.double(), Y.double()
    return torch.stack([(Y - x).square().sum(1).min() for x in X]).sqrt()


def dh(A, B):
    return directed_hausdorff(A.double().numpy(), B.double().numpy())[0]


# ---------------------------------------------------------------- clouds vs scipy / brute force

@pytest.mark.parametrize("n,m,d", [(1, 1, 1), (1, 17, 2), (33, 1, 5), (120, 80, 3), (257, 300, 64), (40, 50, 1500)])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_excess_hausdorff_vs_scipy(n, m, d, chunk_size):
    g = torch.Generator().manual_seed(n * 1000 + m + d)
    C = torch.randn(n, d, dtype=f64, generator=g)
    D = torch.randn(m, d, dtype=f64, generator=g) * 1.5 + 0.3
    if chunk_size is not None and n * m > 20000: pytest.skip("tiny chunks on the biggest clouds: slow, and covered by the smaller shapes")
    e_cd, e_dc = dh(C, D), dh(D, C)
    assert excess(C, D, chunk_size).item() == pytest.approx(e_cd, rel=1e-12)
    assert excess(D, C, chunk_size).item() == pytest.approx(e_dc, rel=1e-12)
    assert hausdorff(C, D, chunk_size).item() == pytest.approx(max(e_cd, e_dc), rel=1e-12)


def test_point_to_set_vs_brute_force():
    g = torch.Generator().manual_seed(1)
    C = torch.randn(700, 9, dtype=f64, generator=g)
    W = torch.randn(65, 9, dtype=f64, generator=g)
    ref = brute_nn(W, C)
    for cs in (None, 5, 64):
        torch.testing.assert_close(point_to_set_distance(W, C, cs), ref, rtol=1e-13, atol=0)
    out = point_to_set_distance(W[0], C)
    assert out.ndim == 0 and out.item() == pytest.approx(ref[0].item(), rel=1e-13)


def test_duplicates_and_ties():
    "Many exactly tied candidates (a lattice, every point duplicated) must not break exactness."
    grid = torch.stack(torch.meshgrid(torch.arange(6.), torch.arange(6.), indexing='ij'), -1).reshape(-1, 2).double()
    D = torch.cat([grid] * 3)
    C = grid + 0.5                       # each point equidistant from 4 (×3 duplicates) lattice points
    assert excess(C, D).item() == pytest.approx(dh(C, D), rel=1e-14)
    assert excess(D, C, chunk_size=4).item() == pytest.approx(dh(D, C), rel=1e-14)
    same = torch.ones(50, 3, dtype=f64)
    assert hausdorff(same, same[:3]).item() == 0.


def test_float32_close_clouds_accuracy():
    "The goal of the issue: the float32 shortcut alone is off by ~10%; excess must match scipy to 1e-5."
    g = torch.Generator().manual_seed(2)
    for n, d in [(1000, 64), (100, 3000)]:
        A = torch.randn(n, d, generator=g)
        B = A + 1e-3 * torch.randn(n, d, generator=g)
        ab, ba = dh(A, B), dh(B, A)
        for X, Y, ref in [(A, B, ab), (B, A, ba)]:
            out = excess(X, Y)
            assert out.dtype == torch.float32 and abs(out.item() - ref) / ref < 1e-6
        assert abs(hausdorff(A, B).item() - max(ab, ba)) / ab < 1e-6
        torch.testing.assert_close(point_to_set_distance(A[:20], B).double(), brute_nn(A[:20], B), rtol=1e-6, atol=0)


def test_float32_offset_clouds():
    "Clouds far from the origin: centring keeps the screening useful and the result exact."
    g = torch.Generator().manual_seed(3)
    A = torch.randn(800, 16, generator=g) + 1e4
    B = A + 1e-2 * torch.randn(800, 16, generator=g)
    assert abs(excess(A, B).item() - dh(A, B)) / dh(A, B) < 1e-6


def test_separated_prunes_most_pairs():
    "Pruning: separated clouds need only a small share of the pairs; close ones about half plus overhead."
    g = torch.Generator().manual_seed(4)
    n = 4000
    A = torch.randn(n, 32, generator=g)
    sc = sets._NNScan(A, torch.randn(n, 32, generator=g) + 20 * torch.eye(32)[0])
    assert math.sqrt(sc.excess_sq()) == pytest.approx(dh(A, sc.Y), rel=1e-12)
    assert sc.stats['pairs'] < 0.15 * n * n
    sc = sets._NNScan(A, A + 1e-3 * torch.randn(n, 32, generator=g))
    assert math.sqrt(sc.excess_sq()) == pytest.approx(dh(A, sc.Y), rel=1e-9)
    assert sc.stats['pairs'] < 0.8 * n * n and sc.stats['exact'] <= 1.2 * n


def test_small_memory_budget(monkeypatch):
    "A tiny budget only changes block sizes, not the answer."
    monkeypatch.setattr(sets, 'MEMORY_BUDGET', 2**16)
    g = torch.Generator().manual_seed(5)
    C, D = torch.randn(300, 40, dtype=f64, generator=g), torch.randn(200, 40, dtype=f64, generator=g)
    assert hausdorff(C, D).item() == pytest.approx(max(dh(C, D), dh(D, C)), rel=1e-12)


def test_dtype_and_device_kept():
    C = torch.randn(30, 4, dtype=torch.float16)
    D = torch.randn(20, 4, dtype=torch.float16)
    out = hausdorff(C, D)
    assert out.dtype == torch.float16 and out.device == C.device and out.ndim == 0
    assert out.item() == pytest.approx(max(dh(C, D), dh(D, C)), rel=1e-3)


# ---------------------------------------------------------------- metric axioms (hypothesis)

coord = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=64)
def cloud(d):
    return arrays(np.float64, st.tuples(st.integers(1, 12), st.just(d)), elements=coord).map(torch.from_numpy)

clouds3 = st.integers(1, 4).flatmap(lambda d: st.tuples(cloud(d), cloud(d), cloud(d)))
hyp = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@hyp
@given(clouds3)
def test_metric_axioms(CDE):
    C, D, E = CDE
    assert hausdorff(C, C).item() == 0.
    hcd = hausdorff(C, D).item()
    assert hcd == hausdorff(D, C).item()                                   # symmetric (exactly)
    assert hcd >= 0
    scale = 1 + max(float(t.abs().max()) for t in (C, D, E))
    assert hausdorff(C, E).item() <= hcd + hausdorff(D, E).item() + 1e-12 * scale   # triangle
    assert hcd == max(excess(C, D).item(), excess(D, C).item())
    assert excess(C, D).item() == pytest.approx(dh(C, D), rel=1e-12, abs=1e-12 * scale)


@hyp
@given(clouds3)
def test_excess_of_subset_is_zero(CDE):
    C, D, _ = CDE
    U = torch.cat([C, D])
    assert excess(C, U).item() == 0. and excess(D, U).item() == 0.
    assert excess(U, C).item() == pytest.approx(excess(D, C).item(), abs=0)   # e(C ∪ D, C) = e(D, C)


def test_excess_asymmetry_example():
    "Figure 1 of paper 1 in numbers: C = [(0,0),(2,0)], D = [(1,1),(4,1)] sampled at their endpoints + midpoints."
    t = torch.linspace(0, 1, 1001, dtype=f64)[:, None]
    C = torch.tensor([0., 0.], dtype=f64) + t * torch.tensor([2., 0.], dtype=f64)
    D = torch.tensor([1., 1.], dtype=f64) + t * torch.tensor([3., 0.], dtype=f64)
    tol = 5 / 2000
    assert abs(excess(C, D).item() - math.sqrt(2)) <= tol
    assert abs(excess(D, C).item() - math.sqrt(5)) <= tol
    assert hausdorff(C, D).item() == excess(D, C).item()
    assert excess(C[:1], C).item() == 0 and excess(C, C[:1]).item() == pytest.approx(2.)


# ---------------------------------------------------------------- AffineSet

def random_affine(p, r, rank, seed):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(p, rank, dtype=f64, generator=g) @ torch.randn(rank, r, dtype=f64, generator=g) if rank else torch.zeros(p, r, dtype=f64)
    return torch.randn(p, dtype=f64, generator=g), V, g


@pytest.mark.parametrize("p,r,rank", [(5, 0, 0), (5, 2, 0), (6, 3, 3), (8, 6, 2), (4, 4, 4), (30, 12, 7)])
def test_affine_vs_lstsq(p, r, rank):
    x0, V, g = random_affine(p, r, rank, seed=p + r + rank)
    S = AffineSet(x0, V)
    assert S.dim == rank and S.ambient_dim == p and S.basis.shape == (p, rank)
    torch.testing.assert_close(S.basis.T @ S.basis, torch.eye(rank, dtype=f64), atol=1e-12, rtol=0)
    W = torch.randn(25, p, dtype=f64, generator=g)
    if r:
        z = torch.linalg.lstsq(V, (W - x0).T, driver='gelsd').solution
        proj = x0 + (V @ z).T
    else:
        proj = x0.expand(25, p)
    torch.testing.assert_close(S.project(W), proj, atol=1e-11, rtol=0)
    torch.testing.assert_close(S.distance(W), (W - proj).norm(dim=1), atol=1e-11, rtol=0)
    assert S.distance(W[0]).ndim == 0
    torch.testing.assert_close(S.min_norm_point(), x0 - V @ (torch.linalg.pinv(V) @ x0) if r else x0, atol=1e-11, rtol=0)
    assert bool(S.contains(S.project(W)).all())
    if rank < p: assert not bool(S.contains(W).any())
    # as a set argument of the cloud functions
    torch.testing.assert_close(point_to_set_distance(W, S), S.distance(W))
    assert excess(W, S).item() == pytest.approx(S.distance(W).max().item(), rel=1e-14)


def test_affine_rank_tolerance():
    g = torch.Generator().manual_seed(7)
    V = torch.randn(10, 3, dtype=f64, generator=g)
    V = torch.cat([V, V[:, :1] + 1e-9 * torch.randn(10, 1, dtype=f64, generator=g)], 1)
    assert AffineSet(torch.zeros(10, dtype=f64), V).dim == 4                  # 1e-9 is above max(p, r)·eps
    assert AffineSet(torch.zeros(10, dtype=f64), V, rtol=1e-6).dim == 3       # but not above 1e-6


@pytest.mark.parametrize("k", [1, 2, 4])
def test_sample_in_set_and_ball(k):
    x0, V, g = random_affine(7, k, k, seed=10 + k)
    S = AffineSet(x0, V)
    gen = torch.Generator().manual_seed(0)
    X = S.sample(3000, radius=2.0, generator=gen)
    assert X.shape == (3000, 7)
    assert bool(S.contains(X).all()) and bool(((X - x0).norm(dim=1) <= 2.0 + 1e-12).all())
    # uniform in the k-ball: P(‖x − x0‖ ≤ r/2) = 2^-k, and the mean is the centre
    frac = ((X - x0).norm(dim=1) <= 1.0).double().mean().item()
    assert abs(frac - 0.5**k) < 5 * math.sqrt(0.5**k * (1 - 0.5**k) / 3000)
    assert (X.mean(0) - x0).norm().item() < 5 * 2.0 / math.sqrt(3000)
    # reproducible with the same generator
    torch.testing.assert_close(S.sample(5, generator=torch.Generator().manual_seed(3)),
                               S.sample(5, generator=torch.Generator().manual_seed(3)))


def test_sample_off_centre():
    x0, V, g = random_affine(5, 2, 2, seed=20)
    S = AffineSet(x0, V)
    n = torch.linalg.svd(torch.cat([V, torch.eye(5, dtype=f64)], 1)).U[:, 2]   # a normal direction
    n = n - S.basis @ (S.basis.T @ n); n = n / n.norm()
    c = x0 + 0.3 * (S.basis[:, 0]) + 0.8 * n                 # δ = 0.8 from the set
    assert S.distance(c).item() == pytest.approx(0.8, rel=1e-12)
    X = S.sample(2000, radius=1.0, center=c, generator=torch.Generator().manual_seed(1))
    rho = math.sqrt(1 - 0.8**2)
    assert bool(S.contains(X).all()) and bool(((X - c).norm(dim=1) <= 1 + 1e-12).all())
    dist = (X - S.project(c)).norm(dim=1)
    assert dist.max().item() <= rho + 1e-12 and dist.max().item() > 0.95 * rho
    with pytest.raises(ValueError, match='radius'):
        S.sample(3, radius=0.79, center=c)
    P = AffineSet(x0, V[:, :0])
    torch.testing.assert_close(P.sample(4, radius=1.0), x0.expand(4, 5))     # a point: the set itself


def test_affine_excess_between_affine_sets():
    x0, V, g = random_affine(6, 3, 3, seed=30)
    S = AffineSet(x0, V)
    off = torch.randn(6, dtype=f64, generator=g)
    L = AffineSet(x0 + off, V[:, :1])
    assert excess(L, S).item() == pytest.approx(S.distance(x0 + off).item(), rel=1e-12)
    assert excess(S, L).item() == math.inf
    assert hausdorff(S, AffineSet(x0 + V[:, 0], V @ torch.randn(3, 3, dtype=f64, generator=g))).item() == pytest.approx(0, abs=1e-12)
    C = torch.randn(4, 6, dtype=f64, generator=g)
    assert excess(S, C).item() == math.inf and hausdorff(C, S).item() == math.inf
    assert excess(AffineSet(x0, V[:, :0]), C).item() == pytest.approx(brute_nn(x0[None], C).item(), rel=1e-14)


# ---------------------------------------------------------------- bad input

def test_finite_check_without_false_alarms():
    big = torch.full((4, 2), 3e38)                 # finite, but the sum overflows: the chunked check decides
    assert sets._finite(big, 'C') is big
    big[2, 1] = math.nan
    with pytest.raises(ValueError, match='C: contains NaN or Inf'):
        sets._finite(big, 'C')
    for v in (1e30, 1e-30):                         # float32 squares would overflow / underflow
        C = torch.tensor([[v, 0.], [0., 2*v]]); D = torch.tensor([[-v, 0.], [0., v]])
        assert excess(C, D).item() == pytest.approx(dh(C, D), rel=1e-6)      # √2·v
        assert excess(D, C).item() == pytest.approx(dh(D, C), rel=1e-6)      # 2·v


@pytest.mark.parametrize("call,err,msg", [
    (lambda C: excess(C, torch.randn(4, 4, dtype=f64)), ValueError, 'C, D: points of different dimensions'),
    (lambda C: hausdorff(C, torch.randn(4, 3)), ValueError, 'C, D: different dtypes'),
    (lambda C: excess(C.clone().fill_(math.nan), C), ValueError, 'C: contains NaN'),
    (lambda C: excess(C, C.clone().fill_(math.inf)), ValueError, 'D: contains NaN or Inf'),
    (lambda C: excess(C, C[:0]), ValueError, 'D: is empty'),
    (lambda C: hausdorff(C[:, :0], C[:, :0]), ValueError, 'C: is empty'),
    (lambda C: excess(C[0], C), ValueError, 'C: expected 2 dimensions'),
    (lambda C: excess(C[None], C), ValueError, 'C: expected 2 dimensions'),
    (lambda C: excess(C.numpy(), C), TypeError, 'C: expected an (n, d) torch.Tensor'),
    (lambda C: excess(C, C.long()), TypeError, 'D: expected a floating dtype'),
    (lambda C: excess(C.to(torch.complex128), C), TypeError, 'C: expected a real floating dtype'),
    (lambda C: point_to_set_distance(C[0, :2], C), ValueError, 'w, C: points of different dimensions'),
    (lambda C: point_to_set_distance(C[None], C), ValueError, 'w: expected 1 or 2 dimensions'),
    (lambda C: point_to_set_distance(C[0].float(), C), ValueError, 'w, C: different dtypes'),
    (lambda C: AffineSet(C[0], torch.zeros(4, 1, dtype=f64)), ValueError, 'basis: expected shape (3, r)'),
    (lambda C: AffineSet(C, C), ValueError, 'point: expected 1 dimensions'),
    (lambda C: AffineSet(C[0], C[0]), ValueError, 'basis: expected 2 dimensions'),
    (lambda C: AffineSet(C[0], C.T.float()), ValueError, 'point, basis: different dtypes'),
    (lambda C: AffineSet(C[0], C.T, rtol=-1.), ValueError, 'rtol'),
    (lambda C: AffineSet(C[0], C.T.clone().fill_(math.nan)), ValueError, 'basis: contains NaN'),
    (lambda C: AffineSet(C[0], C.T).distance(C[:, :2]), ValueError, 'w: expected points with 3 coordinates'),
    (lambda C: AffineSet(C[0], C.T).sample(0), ValueError, 'n: expected a positive int'),
    (lambda C: AffineSet(C[0], C.T).sample(2, radius=-1.), ValueError, 'radius'),
    (lambda C: AffineSet(C[0], C.T).sample(2, center=C), ValueError, 'center: expected 1 dimensions'),
    (lambda C: excess(C, AffineSet(C[0, :2], C[:2, :2].T)), ValueError, 'C, D: points of different dimensions'),
    (lambda C: excess(C, C, chunk_size=0), ValueError, 'chunk_size: must be > 0'),
    (lambda C: hausdorff(C, C, chunk_size=2.5), TypeError, 'chunk_size: expected a positive int'),
    (lambda C: point_to_set_distance(C, C, chunk_size=True), TypeError, 'chunk_size'),
    (lambda C: AffineSet(C[0], C.T).contains(C, atol=-1.), ValueError, 'atol'),
])
def test_bad_input(call, err, msg):
    C = torch.randn(5, 3, dtype=f64)
    with pytest.raises(err, match=msg.replace('(', r'\(').replace(')', r'\)')):
        call(C)


# ---------------------------------------------------------------- the screening bound itself

@pytest.mark.parametrize("n,d,offset,dtype", [(200, 64, 0., torch.float32), (200, 64, 1e4, torch.float32),
                                              (40, 3000, 0., torch.float32), (200, 64, 1e6, f64)])
def test_screening_error_bound(n, d, offset, dtype):
    "The rigorous bound E_i ≥ |s̃_ij − s_ij| that decides which pairs are recomputed exactly."
    g = torch.Generator().manual_seed(d + n)
    A = (torch.randn(n, d, dtype=f64, generator=g) + offset).to(dtype)
    B = (A.double() + 1e-3 * torch.randn(n, d, dtype=f64, generator=g)).to(dtype)
    sc = sets._NNScan(A, B)
    Xp, na = sc.panel(torch.arange(n))
    T, na64, E = sc.products(Xp, na, torch.arange(n))
    s = (A.double()[:, None, :] - B.double()[None, :, :]).square().sum(-1)
    ratio = ((na64[:, None] + T.double() - s).abs() / E[:, None]).max().item()
    assert ratio < 1


def test_basis_signs_are_canonical_so_samples_do_not_depend_on_lapack():
    """An SVD returns each singular vector up to sign, and LAPACK builds differ in the sign they return: a stored toy-study
    sample (a line, so the sign decides which way each point goes) moved between two machines. The basis is canonical:
    the largest entry of each column is positive, for any spanning set, so a line spanned by b or by −b draws the same points."""
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        B = torch.randn(6, 3, generator=g, dtype=torch.float64)
        Q = AffineSet(torch.zeros(6, dtype=torch.float64), B).basis
        assert (Q.gather(0, Q.abs().argmax(0, keepdim=True)) > 0).all(), seed
    g = torch.Generator().manual_seed(0)
    b, p0 = torch.randn(6, 1, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    sa = AffineSet(p0, b).sample(4, radius=2., generator=torch.Generator().manual_seed(1))
    sb = AffineSet(p0, -b).sample(4, radius=2., generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sa, sb, rtol=0, atol=1e-13)
