"""The data-parallel engine equals the single-process one: 2 and 3 CPU processes joined by gloo on
127.0.0.1, float64, uneven shards, ranks with no perturbed points; products, solution shift, sampled
solution set and AIF all to 1e-10 relative to each vector's largest entry.

The products agree to the last bit or two (only the order of the sum over shards differs); the
solves amplify that rounding by the condition number of H, which on this problem leaves differences
of about 2e-11 relative (1.5e-10 absolute on entries of size 8.5), measured once with
`python -c "...sharded_products..."`: hence relative, not absolute, 1e-10."""
import pytest, torch
from setsens.distributed import sharded_products, spawn_loopback, shard

@pytest.fixture(scope='module')
def single(): return sharded_products(0, 1)

@pytest.mark.parametrize('world,sizes', [(2, [20, 3]), (3, [4, 15, 4]), (3, [10, 1, 12])])
def test_sharded_equals_single(single, world, sizes):
    multi = spawn_loopback(sharded_products, world, sizes)
    assert multi['shift_converged'] and single['shift_converged']
    keys = [k for k, v in single.items() if isinstance(v, torch.Tensor)]
    assert {'grad', 'hvp', 'jx', 'jxT', 'shift', 'set'} <= set(keys)
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
    from setsens.distributed import DistributedRisk, example_problem
    from setsens.risk import Risk
    m, X, Y = example_problem()
    with pytest.raises(RuntimeError, match='init_process_group'): DistributedRisk(Risk(m, 'mse', X, Y))
    with pytest.raises(TypeError, match='local'): DistributedRisk(object())


def _large(rank, world): return torch.full((1_000_000,), float(rank + 1))


def test_large_result_does_not_deadlock():
    "Rank 0's result (4 MB here, 3.4 MB for a ResNet-56 HVP) exceeds the pipe's buffer: it must still come back."
    out = spawn_loopback(_large, 2)
    assert out.shape == (1_000_000,) and bool((out == 1.).all())
