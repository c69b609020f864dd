"""The data-parallel engine equals the single-process one: 2 and 3 CPU processes joined by gloo on
127.0.0.1, float64, uneven shards, ranks with no perturbed points; products, solution shift, sampled
solution set and AIF all to 1e-10 relative to each vector's largest entry.

The products agree to the last bit or two (only the order of the sum over shards differs); the
solves amplify that rounding by the condition number of H, which on this problem leaves differences
of about 2e-11 relative (1.5e-10 absolute on entries of size 8.5), measured once with
`python -c "...sharded_products..."`: hence relative, not absolute, 1e-10."""
import pytest, torch
from setsens.distributed import spawn_loopback, shard
from distributed_harness import sharded_products, example_problem   # tests/distributed_harness.py

@pytest.fixture(scope='module')
def single(): return sharded_products(0, 1)

@pytest.mark.parametrize('world,sizes', [(2, [20, 3]), (3, [4, 15, 4]), (3, [10, 1, 12])])
def test_sharded_equals_single(single, world, sizes):
    multi = spawn_loopback(sharded_products, world, sizes)
    assert multi['shift_converged'] and single['shift_converged']
    keys = [k for k, v in single.items() if isinstance(v, torch.Tensor)]
    assert {'grad', 'hvp', 'jx', 'jxT', 'shift', 'set', 'jx_idx', 'damped_op'} <= set(keys)
    for k in keys:
        scale = float(single[k].abs().max()) or 1.
        torch.testing.assert_close(multi[k], single[k], rtol=0, atol=1e-10*scale, msg=f'{k} differs')

def test_shard_sizes():
    t = torch.arange(7)
    assert [len(shard(t, r, 3)) for r in range(3)] == [3, 2, 2]
    assert torch.equal(torch.cat([shard(t, r, 3, [1, 0, 6]) for r in range(3)]), t)
    with pytest.raises(ValueError, match='sizes'): shard(t, 0, 2, [3, 3])
    with pytest.raises(ValueError, match='rank'): shard(t, 2, 2)

def test_needs_process_group():
    from setsens.distributed import DistributedRisk
    from setsens.risk import Risk
    m, X, Y = example_problem()
    with pytest.raises(RuntimeError, match='init_process_group'): DistributedRisk(Risk(m, 'mse', X, Y))
    with pytest.raises(TypeError, match='local'): DistributedRisk(object())


def _large(rank, world): return torch.full((1_000_000,), float(rank + 1))


def test_large_result_does_not_deadlock():
    "Rank 0's result (4 MB here, 3.4 MB for a ResNet-56 HVP) exceeds the pipe's buffer: it must still come back."
    out = spawn_loopback(_large, 2)
    assert out.shape == (1_000_000,) and bool((out == 1.).all())


# --- failing loudly: each way a rank can fail is named, never a hang (issue 18) ---

def _stall(rank, world):
    import time, torch.distributed as dist
    if rank == 1: time.sleep(120)  # never joins the collective below
    dist.all_reduce(torch.ones(1))

def _raise(rank, world):
    import torch.distributed as dist
    if rank == 1: raise ValueError('bad shard')
    dist.all_reduce(torch.ones(1))

def _die(rank, world):
    import os, signal, torch.distributed as dist
    if rank == 2: os.kill(os.getpid(), signal.SIGKILL)
    dist.all_reduce(torch.ones(1))

def test_stalled_rank_is_named():
    "Rank 1 sleeps 120 s: without the timeout the run would end normally after it, and no TimeoutError would come."
    with pytest.raises(TimeoutError, match=r"rank\(s\) \[1\] did not finish") as e: spawn_loopback(_stall, 2, timeout=3)
    assert 'rank 1: no report: still running' in str(e.value)

def test_failing_rank_is_named():
    with pytest.raises(RuntimeError, match='rank 1: raised ValueError: bad shard') as e: spawn_loopback(_raise, 2, timeout=30)
    assert "rank 1's traceback" in str(e.value)

def test_dead_rank_is_named():
    with pytest.raises(RuntimeError, match='rank 2: killed by SIGKILL'): spawn_loopback(_die, 3, timeout=30)

@pytest.mark.parametrize('bad', [0, -1, 1.5, True])
def test_spawn_arguments(bad):
    with pytest.raises(ValueError, match='world'): spawn_loopback(_large, bad)
    if bad != 1.5:
        with pytest.raises(ValueError, match='timeout'): spawn_loopback(_large, 2, timeout=bad)


def _disagree(rank, world, what):
    from setsens.distributed import DistributedRisk
    from setsens.risk import Risk
    m, X, Y = example_problem(h=6 + (rank if what == 'p' else 0))
    if what == 'dtype' and rank == 1: m, X, Y = m.float(), X.float(), Y.float()
    if what == 'w' and rank == 1:
        with torch.no_grad(): m[0].bias.add_(0.1)
    try: DistributedRisk(Risk(m.eval(), 'mse', X, Y))
    except ValueError as e: return str(e)
    return 'no error'

@pytest.mark.parametrize('what,needle', [('p', 'p (parameter count)'), ('dtype', 'dtype'), ('w', 'w (parameters)')])
def test_ranks_must_agree(what, needle):
    "Formerly: w + 0.1 on one rank gave an HVP off by 0.21; another p or dtype aborted in gloo. Now every rank refuses."
    msg = spawn_loopback(_disagree, 2, what, timeout=60)
    assert f'the ranks disagree on {needle}' in msg and 'rank 0' in msg and 'rank 1' in msg


def _loss_products(rank, world, which):
    "value, grad, hvp, jx, grad_x of example_problem under several torch losses, sharded [4, 15, 4] (world 3) or whole."
    import torch.nn as nn, torch.distributed as dist
    from setsens.distributed import DistributedRisk
    from setsens.risk import Risk
    m, X, Y = example_problem()
    loss = {'mse_sum': nn.MSELoss(reduction='sum'), 'mse_mean': nn.MSELoss()}[which]
    g = torch.Generator().manual_seed(5)
    V, dX = torch.randn(sum(p.numel() for p in m.parameters()), generator=g, dtype=X.dtype), torch.randn(X.shape, generator=g, dtype=X.dtype)
    if world > 1:
        sizes = [4, 15, 4]; start = sum(sizes[:rank]); rows = slice(start, start + sizes[rank])
        risk = DistributedRisk(Risk(m.eval(), loss, X[rows], Y[rows]))
        parts = [None] * world
        dist.all_gather_object(parts, risk.grad_x()); gx = torch.cat(parts)
        return dict(value=risk.value(), grad=risk.grad(), hvp=risk.hvp(V), jx=risk.jx(dX[rows]), grad_x=gx)
    risk = Risk(m.eval(), loss, X, Y)
    return dict(value=risk.value(), grad=risk.grad(), hvp=risk.hvp(V), jx=risk.jx(dX), grad_x=risk.grad_x())

@pytest.mark.parametrize('which', ['mse_sum', 'mse_mean'])
def test_sharded_reductions(which):
    "A sum-reduced loss is a sum over every rank (no n_r/n weights); a mean over elements is weighted by rows."
    single, multi = _loss_products(0, 1, which), spawn_loopback(_loss_products, 3, which, timeout=120)
    for k, v in single.items():
        torch.testing.assert_close(multi[k], v, rtol=0, atol=1e-10 * (float(v.abs().max()) or 1.), msg=f'{k} differs')
