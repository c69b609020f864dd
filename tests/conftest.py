"""Set-up shared by the whole test suite.

- One CPU thread (the machines are shared; results do not depend on the thread count this way): set here, once,
  before any test module is imported, instead of a `torch.set_num_threads(1)` line in every module.
- `float64_module`: float64 as the default dtype for one module's tests, restored after (`pytestmark =
  pytest.mark.usefixtures('float64_module')`); module-scoped so that hypothesis tests may use it.
- The small problems of `tests/problems.py` as fixtures: `mlp_risk` (the factory `mlp_risk(dtype=f64)`, cached) and
  `sym_matrix` (the Hessian-like random symmetric matrix of given rank and condition). Modules that build them at
  import time (parametrisation) import them from `problems` directly.
"""
import pytest
import torch
import problems

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def float64_module():
    "float64 as the default dtype for this module's tests only (restored after, so other modules keep float32)."
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def mlp_risk():
    "The 2-3-1 tanh MLP risk factory of tests/problems.py: `mlp_risk()` (float64) or `mlp_risk(torch.float32)`."
    return problems.mlp_risk


@pytest.fixture
def sym_matrix():
    "The Hessian-like matrix factory of tests/problems.py: `sym_matrix(p, r, cond, seed=, dtype=, indef=)`."
    return problems.sym_matrix
