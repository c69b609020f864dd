"""The distributed test harness (moved here from `setsens.distributed` by issue 14: it is test code, not library).

`example_problem` is a small float64 regression problem with an exactly singular Hessian (a twin hidden unit);
`sharded_products` computes, on every rank, the engine's products and solves on it through `DistributedRisk`, so that
`spawn_loopback(sharded_products, world, sizes)` can be compared with `sharded_products(0, 1)` (one process).
Spawned processes import `sharded_products` by name: this module must be importable in them (pytest puts `tests/` on
`sys.path`, and the spawned processes inherit it).
"""
import torch
import torch.distributed as dist
from setsens.risk import Risk
from setsens.graphical import solution_shift, estimate_solution_set
from setsens.aif import aif
from setsens.distributed import DistributedRisk, shard


def example_problem(seed: int=0, n: int=23, d: int=5, h: int=6, dtype=torch.float64):
    "A small regression problem with an exactly singular Hessian: (model, X, Y), the same for a given seed."
    g = torch.Generator().manual_seed(seed)
    lin1, lin2 = torch.nn.Linear(d, h), torch.nn.Linear(h, 1)
    with torch.no_grad():
        for p in (*lin1.parameters(), *lin2.parameters()): p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        lin1.weight[-1] = lin1.weight[0]; lin1.bias[-1] = lin1.bias[0]  # a twin hidden unit: H singular
    model = torch.nn.Sequential(lin1, torch.nn.Tanh(), lin2).to(dtype)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    Y = torch.randn(n, 1, generator=g, dtype=dtype)
    return model, X, Y

def _products(risk, X_full_idx, dX, V, U, K_local, seed, gather):
    out = dict(value=risk.value(), grad=risk.grad(), hvp=risk.hvp(V), jx=risk.jx(dX), jxT=gather(risk.jxT(U)))
    dXK = dX[K_local] if len(K_local) else dX[:0]
    out['jx_idx'] = risk.jx(dXK, K_local)                      # rows fetched by index; a rank may hold none of them
    out['damped_op'] = (risk.H + 0.5*risk.I) @ V                # the operator algebra reduces like the products
    out['shift'], info = solution_shift(risk, dXK, idx=K_local, rtol=1e-12, maxiter=200, warn=False, check=False)
    out['shift_converged'] = bool(info.converged)
    out['set'], _ = estimate_solution_set(risk, dXK, n=3, seed=seed, idx=K_local, rtol=1e-12, maxiter=200, warn=False, check=False)
    out['aif'], _ = aif(risk, 2, rtol=1e-12, maxiter=200)
    return out

def sharded_products(rank: int, world: int, # this process and how many there are (world = 1: no process group)
                     sizes: list[int]|None=None, # shard sizes (None: as even as possible)
                     seed: int=0, # the problem and the solution-set starts
                     perturbed: list[int]=(0, 2, 3), # global indices of the perturbed points
                    ) -> dict:
    "The engine's products and solves on `example_problem`, sharded over `world` ranks (run on every rank)."
    model, X, Y = example_problem(seed)
    g = torch.Generator().manual_seed(seed + 1)
    dX, V, U = (torch.randn(X.shape, generator=g, dtype=X.dtype), torch.randn(sum(p.numel() for p in model.parameters()), 2, generator=g, dtype=X.dtype),
                torch.randn(sum(p.numel() for p in model.parameters()), generator=g, dtype=X.dtype))
    if world == 1:
        risk = Risk(model.eval(), 'mse', X, Y)
        return _products(risk, None, dX, V, U, list(perturbed), seed, lambda t: t)
    n = len(X)
    if sizes is None: sizes = [n // world + (r < n % world) for r in range(world)]
    start = sum(sizes[:rank]); rows = range(start, start + sizes[rank])
    K_local = [i - start for i in perturbed if i in rows]
    risk = DistributedRisk(Risk(model.eval(), 'mse', shard(X, rank, world, sizes), shard(Y, rank, world, sizes)))
    def gather(t):
        parts = [None]*world
        dist.all_gather_object(parts, t)
        return torch.cat(parts)
    return _products(risk, None, shard(dX, rank, world, sizes), V, U, K_local, seed, gather)
