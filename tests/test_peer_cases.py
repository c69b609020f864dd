"""curvlinops' test-case families (tests/peer_cases.py) through `Risk`, from tensors (whole and chunked), a DataLoader
(uneven last batch) and a plain list of uneven batches, against `torch.func` derivatives in float64 of the user's own
loss applied once to all the data (issue 13, item 5).

The oracle knows nothing of Risk's chunking, scaling or loss handling: R(w, X) = loss(functional_call(model, w, X), Y)
on all n rows with the loss's own reduction; H = torch.func.hessian(R), J = jacrev(grad_w R, argnums=X), g = grad R.
Parameters are flattened in the order of `model.named_parameters()` restricted to those with requires_grad=True,
which is what Risk documents (`params=None`: all trainable ones); `test_layout` checks that this is the order it uses.
"""
from types import SimpleNamespace
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad as fgrad, hessian, jacrev
from torch.utils.data import DataLoader, TensorDataset
from setsens.risk import Risk
from peer_cases import CASES, BATCH, N, D

RTOL = 1e-10
K = 3            # right-hand sides per batched product
SOURCES = ('tensors', 'chunked', 'loader', 'batches')   # the first and third are the brief's; the others are cheap
LIST_SIZES = (5, 3, 3)   # 'batches': a plain list of uneven (X, y) batches, as curvlinops feeds its cases


# PyTorch bug (pytorch/pytorch#123996, fix in PR #197723, unreleased in 2.14): jvp(grad(F.mse_loss(.., reduction='mean')))
# divides an efficient ZeroTensor (the target's missing tangent) in place inside mse_loss_double_backward. Risk evaluates
# the mean of torch's elementwise losses as their reduction='sum' copy / elements (which takes no such path), so every
# fwd_rev product with nn.MSELoss() is tested below like the others; `_fwd_ad` turns the error, if met elsewhere, into advice.

# ------------------------------------------------------------------------------------------------ the oracle
def oracle(model, loss, X, Y, names):
    "Value, gradient, Hessian (p, p) and mixed Jacobian J = ∂_X ∇_w R (p, n·d) of R(w, X) = loss(model(X; w), Y) on all rows."
    named = dict(model.named_parameters())
    sizes, shapes = [named[k].numel() for k in names], [named[k].shape for k in names]
    w0 = torch.cat([named[k].detach().reshape(-1) for k in names])
    def R(w, X_):
        params = {k: t.reshape(s) for k, t, s in zip(names, torch.split(w, sizes), shapes)}
        return loss(functional_call(model, params, (X_,)), Y)
    with torch.no_grad(): value = R(w0, X)
    return dict(w0=w0, R=R, value=value, g=fgrad(R)(w0, X), H=hessian(R)(w0, X),
                J=jacrev(fgrad(R), argnums=1)(w0, X).reshape(w0.numel(), -1))


def trainable(model): return [k for k, p in model.named_parameters() if p.requires_grad]


def loader(X, Y): return DataLoader(TensorDataset(X, Y), batch_size=BATCH, shuffle=False)


def batches(X, Y):
    "X, Y cut into a list of (X, y) batches of LIST_SIZES rows."
    return list(zip(X.split(LIST_SIZES), Y.split(LIST_SIZES)))


def make_risk(c, source, **kw):
    "The case's Risk from tensors (whole, or in chunks of BATCH rows), a DataLoader (batches of BATCH rows, the last one shorter) or a list of batches."
    if source == 'tensors': return Risk(c.model, c.loss, c.X, c.Y, **kw)
    if source == 'chunked': return Risk(c.model, c.loss, c.X, c.Y, batch_size=BATCH, **kw)
    return Risk(c.model, c.loss, loader(c.X, c.Y) if source == 'loader' else batches(c.X, c.Y), **kw)


def assert_rel(a, b, rtol=RTOL, what=''):
    "‖a − b‖ ≤ rtol·‖b‖ with a non-zero reference (so the check can fail)."
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    nb = float(torch.linalg.vector_norm(b))
    assert nb > 1e-8, f"{what}: the reference is (near) zero, the check would be vacuous"
    err = float(torch.linalg.vector_norm(a - b))/nb
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


# ----------------------------------------------------------------------------- fixtures: (case × source)
@pytest.fixture(scope='module', params=CASES, ids=[c.id for c in CASES])
def case(request):
    "A case built once (float64, eval mode) with its oracle."
    pc = request.param
    model, loss, X, Y = pc.build()
    names = trainable(model)
    return SimpleNamespace(pc=pc, model=model, loss=loss, X=X, Y=Y, names=names, reduction=getattr(loss, 'reduction', None),
                           **oracle(model, loss, X, Y, names))


@pytest.fixture(scope='module', params=SOURCES)
def source(request): return request.param


@pytest.fixture(scope='module')
def risk(case, source):
    "The (case × source) matrix: one Risk per case and data source."
    assert not case.model.training
    return make_risk(case, source)


def test_case_list_covers_the_families():
    "The peer's families are all present (a case deleted by mistake fails here, not silently)."
    ids = {c.id for c in CASES}
    for l in ('mse', 'ce', 'bce'):
        for r in ('mean', 'sum'): assert {f"mlp-{l}-{r}", f"seq-{l}-{r}"} <= ids
    assert {'cnn-ce-mean', 'bn1d-eval-ce', 'bn2d-eval-mse', 'dropout-eval-bce', 'frozen-mse', 'unused-ce-sum'} <= ids
    assert len(ids) == len(CASES)
    assert sum(LIST_SIZES) == N and len(set(LIST_SIZES)) > 1 and N % BATCH   # uneven batches in every source


# --------------------------------------------------------------------------------------------- products
def test_layout(case, risk):
    "Risk's w is the trainable parameters in the model's order; n counts every row (all loader batches)."
    assert risk.names == case.names
    assert risk.n == N and risk.p == case.w0.numel()
    assert torch.equal(risk.w, case.w0)
    named = dict(case.model.named_parameters())
    for k, t in risk.unflatten(risk.w).items(): assert torch.equal(t, named[k].detach())
    assert getattr(case.loss, 'reduction', None) == case.reduction and not case.model.training   # the user's objects are untouched


def test_value_grad(case, risk):
    assert_rel(risk.value(), case.value, what='value')
    assert_rel(risk.grad(), case.g, what='grad')


def test_hvp(case, risk):
    "H V on a (p, K) block and on one column, against torch.func.hessian of the user's loss."
    H = case.H
    assert_rel(H, H.T, rtol=1e-12, what='oracle H symmetric')
    V = torch.randn(risk.p, K, dtype=D, generator=torch.Generator().manual_seed(1))
    HV = H @ V
    assert_rel(risk.hvp(V), HV, what='hvp(V)')
    assert_rel(risk.hvp(V[:, 1]), HV[:, 1], what='hvp(v)')


def _dX(X, k=K):
    "A random dX with rows 4..7 all zero: the second chunk of 'chunked'/'loader' and the second batch of 'batches' have nothing to contribute to jx (Risk skips such chunks)."
    dX = torch.randn(X.shape + (k,), dtype=D, generator=torch.Generator().manual_seed(2))
    dX[BATCH:2*BATCH] = 0
    return dX


def test_jx(case, risk):
    "J dX = ∂_t ∇_w R(w, X + t dX) against the mixed Jacobian (jacrev of grad) applied to dX."
    dX = _dX(case.X)
    ref = case.J @ dX.reshape(-1, K)
    assert_rel(risk.jx(dX), ref, what='jx(dX)')
    assert_rel(risk.jx(dX[..., 0]), ref[:, 0], what='jx(dx)')


def test_jxT(case, risk):
    "Jᵀ U against the oracle, and the adjoint identity ⟨U, J dX⟩ = ⟨Jᵀ U, dX⟩."
    U = torch.randn(risk.p, K, dtype=D, generator=torch.Generator().manual_seed(3))
    JtU = risk.jxT(U)
    assert_rel(JtU, (case.J.T @ U).reshape(case.X.shape + (K,)), what='jxT(U)')
    assert_rel(risk.jxT(U[:, 2]), (case.J.T @ U[:, 2]).reshape(case.X.shape), what='jxT(u)')
    dX = _dX(case.X)
    lhs = (U*risk.jx(dX)).sum(0)
    rhs = (JtU*dX).reshape(-1, K).sum(0)
    assert_rel(lhs, rhs, what='adjoint')


@pytest.mark.parametrize('mode', ['fwd_rev', 'rev_rev_cached'])
def test_other_modes_vmapped(case, source, mode):
    """Forward-over-reverse and cached reverse-over-reverse products, right-hand sides batched with vmap, against the same
    oracle. (fwd_rev with nn.MSELoss's mean met torch 2.14's 'ZeroTensors are immutable' (pytorch#123996) until Risk
    evaluated an elementwise mean as its sum-reduced copy / elements.)"""
    r = make_risk(case, source, hvp_mode=mode, vectorize=True)
    g = torch.Generator().manual_seed(4)
    V, U = torch.randn(r.p, K, dtype=D, generator=g), torch.randn(r.p, K, dtype=D, generator=g)
    dX = _dX(case.X)
    for _ in range(2):   # twice: the cached mode's second pass reuses its vjp closures
        assert_rel(r.hvp(V), case.H @ V, what=f'{mode} hvp(V)')
    assert_rel(r.jx(dX), case.J @ dX.reshape(-1, K), what=f'{mode} jx(dX)')
    assert_rel(r.jxT(U), (case.J.T @ U).reshape(case.X.shape + (K,)), what=f'{mode} jxT(U)')


# ------------------------------------------------------------------------------------- special structure
def _tagged(tag): return [c for c in CASES if tag in c.tags]


@pytest.mark.parametrize('source', SOURCES)
def test_frozen_parameters_excluded(source):
    "Risk's default w leaves out parameters with requires_grad=False (they stay constants at their values); naming them in `params` brings them in, in the model's order."
    pc, = _tagged('frozen')
    model, loss, X, Y = pc.build()
    c = SimpleNamespace(model=model, loss=loss, X=X, Y=Y)
    w_frozen = model[0].weight.detach().clone()
    r = make_risk(c, source)
    allnames = [k for k, _ in model.named_parameters()]
    assert '0.weight' not in r.names and r.names == [k for k in allnames if k != '0.weight']
    assert r.p == sum(p.numel() for p in model.parameters()) - w_frozen.numel()
    o = oracle(model, loss, X, Y, r.names)
    assert_rel(r.hvp(torch.eye(r.p, dtype=D)), o['H'], what='H without the frozen weight')
    # explicitly requested (any order): included, in the model's order, and the Hessian grows by its block
    ra = make_risk(c, source, params=list(reversed(allnames)))
    assert ra.names == allnames
    oa = oracle(model, loss, X, Y, allnames)
    assert_rel(ra.grad(), oa['g'], what='grad with the frozen weight')
    assert_rel(ra.hvp(torch.eye(ra.p, dtype=D)), oa['H'], what='H with the frozen weight')
    assert not model[0].weight.requires_grad and torch.equal(model[0].weight, w_frozen)   # the model is untouched


@pytest.mark.parametrize('source', SOURCES)
def test_unused_parameters_zero_rows(source):
    "A trainable parameter that forward never uses is in w, with zero gradient and zero rows/columns of H (exactly)."
    pc, = _tagged('unused')
    model, loss, X, Y = pc.build()
    r = make_risk(SimpleNamespace(model=model, loss=loss, X=X, Y=Y), source)
    assert r.names == trainable(model) and {'spare.weight', 'spare.bias'} <= set(r.names)
    mask = torch.cat([torch.full((t.numel(),), k.startswith('spare.')) for k, t in r.unflatten(r.w).items()])
    o = oracle(model, loss, X, Y, r.names)
    assert int(mask.sum()) == 30 and not bool(o['H'][mask].any()) and bool(o['H'][~mask][:, ~mask].any())
    Hr = r.hvp(torch.eye(r.p, dtype=D))
    assert_rel(Hr, o['H'], what='H')
    assert not bool(Hr[mask].any()) and not bool(Hr[:, mask].any())
    assert not bool(r.grad()[mask].any())
    assert not bool(r.jx(_dX(X))[mask].any())
    assert bool(r.grad()[~mask].any())


@pytest.mark.parametrize('source', SOURCES)
@pytest.mark.parametrize('pc', _tagged('train_refused'), ids=lambda c: c.id)
def test_train_mode_refused_names_module(pc, source):
    "BatchNorm / dropout in train mode: refused with an error naming the submodule and the fix; the mode is not changed."
    model, loss, X, Y = pc.build()
    name, mod = next((k, m) for k, m in model.named_modules()
                     if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)))
    model.train()
    c = SimpleNamespace(model=model, loss=loss, X=X, Y=Y)
    with pytest.raises(ValueError, match=rf"submodule '{name}' \({type(mod).__name__}\) is in train mode.*model\.eval\(\)"):
        make_risk(c, source)
    assert model.training and mod.training
    r = make_risk(SimpleNamespace(model=model.eval(), loss=loss, X=X, Y=Y), source)   # eval mode: accepted
    assert r.p == len(r.w)
