"""Host synchronisations inside Krylov iterations (issue 17 item 3): at most the stopping test's one per iteration.

A `TorchFunctionMode` counts every call that makes the host wait for the device: reading a value (`item`, `bool`,
`float`, `int`, `tolist`, `__array__`, printing), a copy to the CPU (`cpu`, `.to('cpu')`), and data-dependent shapes
(`nonzero`, boolean-mask indexing). On the CPU these cost nothing, but the count is the same as on a GPU, so CPU CI
checks what a GPU run would pay. Parametrised over the available devices.
"""
import pytest, torch
from torch.overrides import TorchFunctionMode
from setsens.krylov import minres, lsqr, cgls

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
_READS = {'item', '__bool__', '__float__', '__int__', '__index__', 'tolist', '__array__', '__format__', '__repr__',
          'nonzero', 'masked_select', 'cpu', 'numpy'}


def _is_cpu(d): return d is not None and torch.device(d).type == 'cpu'


class SyncCounter(TorchFunctionMode):
    "Counts host synchronisations; `numpy()` of the result of a counted `cpu()` is the same transfer, counted once."
    def __init__(self):
        super().__init__(); self.n, self.names, self._copied = 0, [], None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', '')
        sync = name in _READS
        if name == 'numpy' and args and args[0] is self._copied: sync = False
        if name == 'to':
            dev = kwargs.get('device', next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
            sync = _is_cpu(dev)
        if name in ('__getitem__', '__setitem__') and len(args) > 1:
            idx = args[1] if isinstance(args[1], tuple) else (args[1],)
            sync = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in idx)
        out = func(*args, **kwargs)
        if sync: self.n += 1; self.names.append(name)
        if name == 'cpu': self._copied = out
        return out


def _problem(device, p=120, r=70, k=3, seed=0):
    "A singular symmetric (indefinite) matrix of rank r with spread eigenvalues, and k right-hand sides, float64."
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    lam = torch.zeros(p, dtype=torch.float64)
    lam[:r] = torch.logspace(-3, 1, r, dtype=torch.float64)*torch.where(torch.arange(r) % 5 == 0, -1., 1.).double()
    A = (Q*lam) @ Q.T
    return ((A + A.T)/2).to(device), torch.randn(p, k, generator=g, dtype=torch.float64).to(device)


def _count(solver, A, b, maxiter):
    with SyncCounter() as c:
        x, info = solver(A, b, rtol=0., maxiter=maxiter, warn=False, progress=False)
    return c.n, info, c.names


def test_counter_counts():
    "The counter sees each kind of read, so the bounds below can fail."
    x = torch.ones(3)
    with SyncCounter() as c:
        x.sum().item(); bool(x.all()); float(x.sum()); x.tolist(); x.cpu().numpy(); x[x > 0]; x.to('cpu')
        y = x*2 + 1                                    # no sync
    assert c.n == 7, c.names


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('solver', [minres, lsqr, cgls])
@pytest.mark.parametrize('shape', ['vector', 'block'])
def test_one_sync_per_iteration(solver, device, shape):
    "Syncs grow by at most one per iteration (plus a rare true-residual check); set-up and the end are a constant."
    A, B = _problem(device)
    b = B[:, 0] if shape == 'vector' else B
    n1, i1, _ = _count(solver, A, b, 20)
    n2, i2, names = _count(solver, A, b, 60)
    assert i1.iterations == 20 and i2.iterations == 60   # rtol = 0: every iteration runs
    per_it = (n2 - n1)/(i2.iterations - i1.iterations)
    assert per_it <= 1.15, (per_it, names[-20:])        # one per iteration: the stopping test
    assert n2 <= i2.iterations + 40, (n2, names)        # and a constant for set-up, the final check, the report


@pytest.mark.parametrize('device', DEVICES)
def test_minres_result_unchanged_by_counter(device):
    "The counted solve is the solve: same iterate with and without the mode (the mode only observes)."
    A, B = _problem(device)
    x1, _ = minres(A, B, rtol=1e-12, warn=False)
    with SyncCounter():
        x2, _ = minres(A, B, rtol=1e-12, warn=False)
    assert torch.equal(x1, x2)
    xs = torch.linalg.pinv(A.cpu(), hermitian=True) @ B.cpu()    # and it is the minimum-norm solution
    assert (x1.cpu() - xs).norm() <= 1e-6*xs.norm()          # κ = 1e4: the attainable forward error is ~ κ²ε


@pytest.mark.parametrize('device', DEVICES)
def test_pinv_block_two_reads_per_step(device):
    """`pinv_solve`'s block Krylov space between its Rayleigh–Ritz checks: two host reads per block step, one for
    ‖V‖, the number of kept directions and their singular values (which also decide the second pass), one for the
    products' finiteness and norm (the next step's threshold). The checks come once early and once at the end in
    both runs (check_growth is huge), so the counts of 10 and 20 steps differ by the steps alone."""
    from setsens.pinv import _block_krylov
    A, B = _problem(device, p=120, r=110)                      # k = 3: 60 of 110 directions after 20 steps
    filt = [lambda th, cut: torch.where(th.abs() > cut, 1/th, torch.zeros_like(th))]
    def count(m):
        with SyncCounter() as c:
            out, conv, inv, steps, *_ = _block_krylov(lambda V: A @ V, B, filt, lambda r: 100*r, 0., m, check_growth=1e9)
        assert steps == m and not bool(inv.any())
        return c
    c10, c20 = count(10), count(20)
    assert c20.n - c10.n <= 2*10, (c20.n - c10.n, c20.names[-30:])


@pytest.mark.parametrize('device', DEVICES)
def test_pinv_lanczos_two_reads_per_step(device):
    """`pinv_solve`'s Lanczos (one Krylov space per column, in lockstep) between its convergence checks: two host reads
    per step, the stopping test and whether a column needs a second Gram–Schmidt pass (a step that takes one adds
    the read of which columns: `nonzero` and `tolist`). ρ, ‖T‖ and the finiteness test stay on the device until the
    checks; here the checks never come (check_every is huge), so the counts of 20 and 40 steps differ by the steps."""
    from setsens.pinv import _filtered_lanczos
    A, B = _problem(device, p=120, r=110)                      # rank 110: no Krylov space becomes invariant in 40 steps
    filt = [lambda th, cut: torch.where(th.abs() > cut, 1/th, torch.zeros_like(th))]
    def count(m):
        with SyncCounter() as c:
            out, conv, inv, steps, *_ = _filtered_lanczos(lambda V: A @ V, B, filt, lambda r: 100*r, 0., m, check_every=10**9)
        assert steps.tolist() == [m]*3 and not inv.any()
        return c
    c20, c40 = count(20), count(40)
    second = c40.names.count('nonzero') - c20.names.count('nonzero')     # steps that took a second pass
    assert c40.n - c20.n <= 2*20 + 2*second, (c40.n - c20.n, second, c40.names[-30:])
    assert second < 20                                          # the second pass is the exception, not the rule
