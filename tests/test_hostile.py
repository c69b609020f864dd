"""Issue 15's hostile inputs by class (item 7): every former C/D/E case is A (a clear error naming the argument or
file) or B (a correct result, checked against an independent float64 computation).

Cases already tested elsewhere are not repeated here; this table says where each one lives (pytest ids):

| issue 15 case                                                  | existing test                                                                              |
|----------------------------------------------------------------|--------------------------------------------------------------------------------------------|
| LSTM dropout / RReLU / Dropout in train mode                    | test_risk_faults.py::test_stateful_modules_are_named[lstm-dropout, rrelu, dropout]          |
| BatchNorm track_running_stats=False (value depends on chunking) | test_risk_faults.py::test_stateful_modules_are_named[batchnorm-no-running-stats]            |
| hard-coded F.dropout(training=True)                             | test_risk_faults.py::test_hard_coded_dropout_is_caught_by_the_probe                         |
| batch statistics in forward (F.batch_norm, training=True)       | test_risk_faults.py::test_batch_statistics_in_forward_are_caught_by_the_probe               |
| buffer mutated in forward; `_frozen` shares the user's storage  | test_risk_faults.py::test_buffer_mutated_in_forward_is_refused_and_users_buffer_untouched,  |
|                                                                 | test_risk_faults.py::test_buffers_are_a_copy                                                |
| @once_differentiable backward gives hvp ≡ 0                     | test_risk_faults.py::test_once_differentiable_is_refused                                    |
| NaN loss at row 5 (after the probe)                             | test_risk_faults.py::test_nan_loss_after_the_probe_names_the_row,                          |
|                                                                 | test_risk_faults.py::test_nan_loss_named_in_a_data_source                                   |
| label −100 (ignore_index) counted in n                          | test_risk_faults.py::test_ignore_index_with_the_string_cross_entropy_is_refused,            |
|                                                                 | test_risk_faults.py::test_ignore_index_where_the_reduction_says_how_it_counts               |
| out-of-range label raises IndexError only at value()            | test_risk_faults.py::test_out_of_range_labels_are_named_at_construction                     |
| complex Y gives a complex risk                                  | test_risk_faults.py::test_complex_targets_and_inputs_are_refused                            |
| X.requires_grad keeps the graph                                 | test_risk_faults.py::test_X_requiring_grad_is_detached                                      |
| models returning a tuple / dict                                 | test_risk_faults.py::test_model_output_must_be_a_tensor (a list: here)                      |
| integer targets for a regression loss                           | test_risk_faults.py::test_integer_targets_for_a_regression_loss_are_refused (bool: here)    |
| bit-flipped / zeroed-bytes resnet56 checkpoint in the folder    | test_integrity.py::test_damaged_official_checkpoint_in_data_folder_is_refused[*],           |
|                                                                 | test_integrity.py::test_zip_checkpoint_with_zeroed_bytes_fails_crc                          |
| float images in [0, 1]                                          | test_integrity.py::test_normalize_refuses_float_images                                      |
| labels 17 and −2; 4 images with 3 labels                        | test_integrity.py::test_bad_subset_arrays[*]                                                |
| MNIST with 10 images and 7 labels                               | test_integrity.py::test_mnist_counts_and_labels                                             |
| .npz / gzip / EOF / KeyError without the file's path            | test_integrity.py::test_subset_format_errors_name_the_file,                                 |
|                                                                 | test_integrity.py::test_mnist_official_files_md5_and_gzip_errors,                           |
|                                                                 | test_integrity.py::test_garbage_checkpoint_names_the_file[*]                                |
| FIFO checkpoint "does not exist"                                | test_integrity.py::test_fifo_as_checkpoint_is_named_not_missing,                           |
|                                                                 | test_integrity.py::test_fifo_as_cifar_root                                                  |
| SETSENS_DATA=<a file> says "unset"                              | test_integrity.py::test_setsens_data_not_a_folder[*]                                        |
| rank with w + 0.1; float64 vs float32 shards; p = 43 vs 50      | test_distributed.py::test_ranks_must_agree[*] (w, dtype, p)                                  |
| stalled rank blocks spawn_loopback forever                      | test_distributed.py::test_stalled_rank_is_named                                             |
| `--out ''` writes into the cwd and overwrites REPORT.md         | test_cli_safety.py::test_empty_out_is_refused_and_cwd_report_untouched                      |
| `--out` a file, /dev/null, /proc/x: computes, then raw error    | test_cli_safety.py::test_out_that_is_not_a_folder_is_refused_before_computing[*]            |
| `setsens aif --quick --out NEWDIR` fails                        | test_cli_safety.py::test_every_subcommand_creates_its_folder,                              |
|                                                                 | test_cli_safety.py::test_real_aif_quick_into_a_new_folder                                   |
| SIGINT / SIGTERM leaves an old REPORT.md beside new figures     | test_cli_safety.py::test_interrupt_writes_an_interrupted_report[*]                          |
| aif_confidence_interval with n = 1 (zero-width interval)        | test_aif_args.py::test_ci_one_example_refused[krylov, dense]                                |
| lanczos_steps = 0 / −5 silently runs 1 step                     | test_aif_args.py::test_lanczos_steps_refused[*]                                             |
| complex non-Hermitian dwR gives a number                        | test_aif_args.py::test_complex_non_hermitian_dwR_used_to_give_a_number,                    |
|                                                                 | test_aif_args.py::test_complex_refused[*]                                                   |
| float16/bfloat16 in the AIF family and the Krylov solvers       | test_aif_args.py::test_half_precision_refused[*],                                          |
|                                                                 | test_safe_solve.py::test_half_precision_refused[*]                                          |
| meta tensors in the AIF family                                  | test_aif_args.py::test_meta_refused[*]                                                      |
| `b: contains NaN` where the user's dX / gradient is at fault    | test_aif_args.py::test_aif_overflowing_rhs_names_risk_and_scale[*],                        |
|                                                                 | test_aif_args.py::test_nonfinite_hessian_names_risk[*],                                     |
|                                                                 | test_graphical_bad_inputs.py::test_solution_shift_bad_input[shift-dX-inf]                             |

Here: the cases the issue lists that those files do not reach — meta-device models and data given to `Risk` and to
the dense functions (`setsens.sets`, `setsens.graphical`, `setsens.krylov`); custom backwards that are not twice
differentiable without saying so (`.detach()`, numpy); target dtypes (float / int32 / int16 / bool / uint8 labels
for cross-entropy, bool targets for mse); half precision in `setsens.graphical` and `setsens.sets`; other RNNs,
dropouts and norms; and what fuzzing (tests/test_fuzz.py) found: a right-hand side J·ΔX so large that the solve
overflows, a sparse matrix given to the solvers, and arguments that require grad making the solves keep a graph.
Cases that failed when this file was written were `xfail(strict=True)` with the reason until fixed; all are fixed
(meta: check_tensor and Risk refuse the meta device; custom backwards: a central-difference check of H·v at
construction; labels: cast to long or refused naming Y; half precision: check_precision; graphs: dX/x0/b detached;
huge right-hand sides and sparse A: setsens.krylov).
"""
import math, re, warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, grad, jacrev

from setsens.risk import Risk
from setsens.sets import AffineSet, point_to_set_distance, excess, hausdorff
from setsens.krylov import minres, lsqr, cgls
from setsens.graphical import (graphical_derivative, coderivative, lipschitz_modulus, training_stability,
                               solution_set_estimate, influence_point, eq14_matrices, solution_shift,
                               estimate_solution_set)
from problems import mlp_risk, flat_loss

f64 = torch.float64
HALF = [torch.float16, torch.bfloat16]
E = re.escape


def a_or_b(call, names, check, exc=(ValueError, TypeError, NotImplementedError), also=''):
    """Class A or B: `call()` raises `exc` whose message starts by naming one of `names` (the user's argument) and
    contains `also`, or returns a result that `check` verifies against an independent computation."""
    try:
        out = call()
    except exc as e:
        assert re.match(rf'^(?:{"|".join(map(E, names))})\b[^:]*:', str(e)), f'error does not name {names}: {e!r}'
        assert also in str(e), f'error does not say {also!r}: {e!r}'
        return None
    check(out)
    return out


def _data(n=10, d=3, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, dtype=f64, generator=g), torch.randint(0, c, (n,), generator=g)


def _mlp(d=3, c=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, c)).double().eval()


def _plain_ce(net, X, Y):
    "R(w) = mean cross-entropy of `net` on (X, Y) as a function of the flat parameters, by plain torch (no Risk)."
    return flat_loss(net, F.cross_entropy, X, Y)


# ================================================================ meta tensors given to Risk

def test_meta_data_with_a_cpu_model_is_named():
    X, Y = _data()
    with pytest.raises(ValueError, match=E('X, parameters: on different devices (meta vs cpu)')):
        Risk(_mlp(), 'cross_entropy', X.to('meta'), Y)
    with pytest.raises(ValueError, match=E('Y, X: on different devices (meta vs cpu)')):
        Risk(_mlp(), 'cross_entropy', X, Y.to('meta'))


@pytest.mark.parametrize('data_on_meta', [False, True], ids=['cpu-data', 'meta-data'])
def test_meta_model_is_refused(data_on_meta):
    X, Y = _data()
    if data_on_meta: X, Y = X.to('meta'), Y.to('meta')
    with pytest.raises(ValueError, match=r'^model: .*meta'):
        Risk(_mlp().to('meta'), 'cross_entropy', X, Y)


# ================================================================ custom backwards that are not twice differentiable

def _square_fn(backward, forward=lambda x: x * x):
    "x² (or `forward`) as a torch.autograd.Function with the given backward(x, g) and no @once_differentiable mark."
    class Sq(torch.autograd.Function):
        @staticmethod
        def forward(x): return forward(x)
        @staticmethod
        def setup_context(ctx, inputs, output): ctx.save_for_backward(inputs[0])
        @staticmethod
        def backward(ctx, g): x, = ctx.saved_tensors; return backward(x, g)
    Sq.__name__ = Sq.__qualname__ = backward.__name__
    return Sq


def SquareDetached(x, g):
    "The whole backward detached: its result has no graph, so a second derivative through it is 0."
    return 2 * x.detach() * g.detach()

def SquareNumpy(x, g):
    "The backward computed in numpy."
    return torch.from_numpy(2 * x.detach().numpy() * g.detach().numpy())

def SquareHalfDetached(x, g):
    "Differentiable in g but not in x: H misses the term 2·g·(∂x/∂w)² — a Hessian that is wrong, not zero."
    return 2 * x.detach() * g


class SquareNet(nn.Module):
    def __init__(self, fn):
        super().__init__(); self.lin, self.fn = nn.Linear(3, 4), fn
    def forward(self, x): return self.fn.apply(self.lin(x))


@pytest.mark.parametrize('backward', [SquareDetached, SquareNumpy, SquareHalfDetached], ids=lambda f: f.__name__)
def test_custom_backward_not_twice_differentiable(backward):
    "A: refused at construction naming the model; or B: H·V equal to the Hessian of the same function in plain ops."
    X, Y = _data()
    torch.manual_seed(0)
    net = SquareNet(_square_fn(backward)).double()
    def R(w):
        W, b = w[:12].view(4, 3), w[12:]
        return F.cross_entropy((X @ W.T + b) ** 2, Y)
    w = torch.cat([net.lin.weight.detach().reshape(-1), net.lin.bias.detach()])
    H = hessian(R)(w)
    V = torch.randn(16, 3, dtype=f64, generator=torch.Generator().manual_seed(1))
    assert float((H @ V).abs().max()) > 1e-2          # the true product is far from 0
    def check(r):
        torch.testing.assert_close(r.hvp(V), H @ V, rtol=1e-8, atol=1e-10)
    a_or_b(lambda: Risk(net, 'cross_entropy', X, Y), ['model'], check)


def SquareDifferentiable(x, g):
    "The correct backward, in differentiable torch ops: its graph gives the second derivative."
    return 2 * x * g

def ReluDifferentiable(x, g):
    "The backward of x²·[x > 0], differentiable in x and g: a kink the central difference must not mistake for an error."
    return 2 * x * g * (x > 0).to(g.dtype)

def _relu_square(x): return torch.where(x > 0, x * x, 0.)


@pytest.mark.parametrize('backward', [SquareDifferentiable, ReluDifferentiable], ids=lambda f: f.__name__)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=str)
def test_custom_backward_that_is_differentiable_is_accepted(backward, dtype):
    "B (the control of the test above): accepted, and H·V equals the Hessian of the same function in plain ops (torch.func.hessian)."
    X, Y = _data()
    torch.manual_seed(0)
    relu = backward is ReluDifferentiable
    net = SquareNet(_square_fn(backward, _relu_square) if relu else _square_fn(backward)).to(dtype)
    def R(w):
        W, b = w[:12].view(4, 3), w[12:]
        z = X @ W.T + b
        return F.cross_entropy(_relu_square(z) if relu else z * z, Y)
    w = torch.cat([net.lin.weight.detach().reshape(-1), net.lin.bias.detach()]).double()
    H = hessian(R)(w)
    V = torch.randn(16, 3, dtype=f64, generator=torch.Generator().manual_seed(1))
    r = Risk(net, 'cross_entropy', X.to(dtype), Y)
    tol = 1e-10 if dtype == f64 else 1e-4
    torch.testing.assert_close(r.hvp(V.to(dtype)).double(), H @ V, rtol=tol, atol=tol * float((H @ V).abs().max()))


# ================================================================ target dtypes

def test_bool_targets_for_mse_are_refused():
    X, _ = _data()
    Yb = torch.rand(10, 4, generator=torch.Generator().manual_seed(2)) > 0.5
    with pytest.raises(TypeError, match=E("Y: 'mse' is a regression loss and needs real floating targets, got torch.bool")):
        Risk(_mlp(), 'mse', X, Yb)
    with pytest.raises(TypeError, match=E("Y: MSELoss is a regression loss and needs real floating targets, got torch.bool")):
        Risk(_mlp(), nn.MSELoss(), X, Yb)


def test_uint8_labels_give_the_cross_entropy_of_the_long_labels():
    "uint8 is a class-label dtype torch's cross-entropy accepts: B, value and gradient equal plain autograd with long labels."
    X, Y = _data()
    net = _mlp()
    r = Risk(net, 'cross_entropy', X, Y.to(torch.uint8), batch_size=4)
    R, w = _plain_ce(net, X, Y)
    torch.testing.assert_close(r.value(), R(w), rtol=1e-13, atol=0)
    torch.testing.assert_close(r.grad(), grad(R)(w), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('loss', ['cross_entropy', 'CrossEntropyLoss'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.int32, torch.int16, torch.bool], ids=str)
def test_class_labels_of_other_dtypes(dtype, loss):
    "A: an error naming Y and the dtype; or B: the cross-entropy of the same labels as long (checked by plain autograd)."
    X, Y = _data(c=2 if dtype == torch.bool else 4)
    net = _mlp(c=2 if dtype == torch.bool else 4)
    R, w = _plain_ce(net, X, Y)
    a_or_b(lambda: Risk(net, loss if loss == 'cross_entropy' else nn.CrossEntropyLoss(), X, Y.to(dtype)).value(), ['Y'],
           lambda v: torch.testing.assert_close(v, R(w), rtol=1e-13, atol=0))


def test_regression_targets_of_the_wrong_shape_name_Y():
    r = mlp_risk()
    with pytest.raises(ValueError, match=r'^Y: .*shape'):
        Risk(r.model, nn.MSELoss(), r.X, r.Y[:, 0])


def test_mse_string_targets_reshaped_correctly():
    "B: 'mse' with Y (n,) or (n, 1, 1) against an (n, 1) output is ½ mean (f − y)², checked by plain torch."
    r = mlp_risk()
    with torch.no_grad(): ref = 0.5 * ((r.model(r.X) - r.Y) ** 2).mean()
    for Y in (r.Y[:, 0], r.Y[..., None]):
        torch.testing.assert_close(Risk(r.model, 'mse', r.X, Y).value(), ref, rtol=1e-14, atol=0)


# ================================================================ model outputs

def test_model_returning_a_list_is_named():
    class L(nn.Module):
        def __init__(self): super().__init__(); self.lin = nn.Linear(3, 4)
        def forward(self, x): return [self.lin(x)]
    X, Y = _data()
    with pytest.raises(TypeError, match=r"^model: returns a list, not a tensor.*return out\[0\]"):
        Risk(L().double(), 'cross_entropy', X, Y)


# ================================================================ more hidden state: other RNNs and dropouts

class RNNHead(nn.Module):
    def __init__(self, cls):
        super().__init__(); self.rnn, self.head = cls(3, 5, num_layers=2, dropout=0.5, batch_first=True), nn.Linear(5, 4)
    def forward(self, x): return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize('make,culprit', [
    (lambda: RNNHead(nn.GRU), "'rnn' (GRU) is in train mode, where it applies dropout=0.5"),
    (lambda: RNNHead(nn.RNN), "'rnn' (RNN) is in train mode, where it applies dropout=0.5"),
    (lambda: nn.Sequential(nn.Linear(3, 6), nn.AlphaDropout(0.3), nn.Linear(6, 4)), "'1' (AlphaDropout) is in train mode"),
    (lambda: nn.Sequential(nn.Linear(3, 6), nn.Unflatten(1, (6, 1)), nn.FeatureAlphaDropout(0.3), nn.Flatten(), nn.Linear(6, 4)),
     "'2' (FeatureAlphaDropout) is in train mode"),
    (lambda: nn.Sequential(nn.Linear(3, 6), nn.Unflatten(1, (2, 3)), nn.InstanceNorm1d(2, track_running_stats=True), nn.Flatten(),
                           nn.Linear(6, 4)), "'2' (InstanceNorm1d) is in train mode"),
], ids=['gru', 'rnn', 'alpha-dropout', 'feature-alpha-dropout', 'instancenorm-running'])
def test_other_stateful_modules_in_train_mode_are_named(make, culprit):
    X, Y = _data()
    torch.manual_seed(0)
    m = make().double().train()
    if isinstance(m, RNNHead): X = X[:, None].expand(10, 2, 3).contiguous()
    with pytest.raises(ValueError, match='^model: submodule') as e:
        Risk(m, 'cross_entropy', X, Y)
    assert culprit in str(e.value)


def test_instance_norm_without_running_stats_is_per_example_and_accepted():
    "B: InstanceNorm normalises each example by its own statistics (no coupling): value = plain cross-entropy, any chunking."
    X, Y = _data()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.Unflatten(1, (2, 3)), nn.InstanceNorm1d(2), nn.Flatten(), nn.Linear(6, 4)).double().eval()
    R, w = _plain_ce(net, X, Y)
    for bs in (None, 3):
        r = Risk(net, 'cross_entropy', X, Y, batch_size=bs)
        torch.testing.assert_close(r.value(), R(w), rtol=1e-13, atol=0)
        torch.testing.assert_close(r.grad(), grad(R)(w), rtol=1e-11, atol=1e-13)


# ================================================================ half precision

def _half_tol(dtype): return 8 * torch.finfo(dtype).eps


@pytest.mark.parametrize('dtype', HALF, ids=['float16', 'bfloat16'])
def test_half_precision_risk_products_agree_with_float64(dtype):
    "B: a Risk in half precision gives value, gradient and H·v within a few rounding units of the float64 ones."
    r64, rh = mlp_risk(), mlp_risk(dtype)
    v = torch.ones(r64.p, dtype=f64)
    tol = _half_tol(dtype)
    for a, b in ((rh.value(), r64.value()), (rh.grad(), r64.grad()), (rh.hvp(v.to(dtype)), r64.hvp(v))):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, rtol=0, atol=tol * float(b.abs().max()))


@pytest.mark.parametrize('dtype', HALF, ids=['float16', 'bfloat16'])
def test_half_precision_distances_agree_with_float64(dtype):
    "B: distances between half-precision clouds equal the float64 distances of the same (rounded) points, to rounding."
    g = torch.Generator().manual_seed(0)
    C = torch.randn(7, 3, dtype=f64, generator=g).to(dtype)
    Dd = (torch.randn(5, 3, dtype=f64, generator=g) + 1).to(dtype)
    c, d = C.double().numpy(), Dd.double().numpy()
    dist = np.sqrt(((c[:, None] - d[None]) ** 2).sum(-1))           # numpy, all pairs
    ref = {'p2s': dist[0].min(), 'excess': dist.min(1).max(), 'hausdorff': max(dist.min(1).max(), dist.min(0).max())}
    got = {'p2s': point_to_set_distance(C[0], Dd), 'excess': excess(C, Dd), 'hausdorff': hausdorff(C, Dd)}
    for k in ref:
        assert got[k].dtype == dtype, k
        assert abs(float(got[k]) - ref[k]) <= _half_tol(dtype) * ref[k], (k, float(got[k]), ref[k])


def test_half_precision_eq14_matrices_agree_with_float64():
    "B: eq. 14's weighted sums (elementwise) in half precision, against float64."
    g = torch.Generator().manual_seed(0)
    Hs, Js = torch.randn(4, 3, 3, dtype=f64, generator=g), torch.randn(4, 3, 2, dtype=f64, generator=g)
    ref = eq14_matrices(Hs, Js)
    for dt in HALF:
        got = eq14_matrices(Hs.to(dt), Js.to(dt))
        for a, b in zip(got, ref):
            torch.testing.assert_close(a.double(), b, rtol=0, atol=_half_tol(dt) * 4 * float(b.abs().max()))


def _dense_pair():
    A = torch.diag(torch.tensor([2., 1., 0.], dtype=f64))
    B = torch.tensor([[1., 2.], [0., -1.], [0., 0.]], dtype=f64)
    return A, B, torch.tensor([0.5, -1.], dtype=f64)


DENSE_HALF = [
    ('graphical_derivative', lambda A, B, mu, h: graphical_derivative(h(A), h(B), h(mu)).point, lambda A, B, mu: -torch.linalg.pinv(A) @ B @ mu),
    ('coderivative', lambda A, B, mu, h: coderivative(h(A), h(B), h(torch.tensor([1., 1., 0.], dtype=f64))).point, None),
    ('lipschitz_modulus', lambda A, B, mu, h: lipschitz_modulus(h(A), h(B)), lambda A, B, mu: torch.linalg.matrix_norm(torch.linalg.pinv(A) @ B, 2)),
    ('solution_set_estimate', lambda A, B, mu, h: solution_set_estimate(h(A), h(B), h(mu), h(torch.zeros(3, dtype=f64))).point,
     lambda A, B, mu: -torch.linalg.pinv(A) @ B @ mu),
    ('influence_point', lambda A, B, mu, h: influence_point(h(A), h(B), h(mu)), lambda A, B, mu: -torch.linalg.pinv(A) @ B @ mu),
    ('training_stability', lambda A, B, mu, h: training_stability(h(A), h(B), h(mu), h(torch.zeros(3, dtype=f64)),
                                                                  generator=torch.Generator().manual_seed(0)).distance, None),
    ('AffineSet', lambda A, B, mu, h: AffineSet(h(torch.zeros(3, dtype=f64)), h(torch.eye(3, dtype=f64)[:, 2:])).distance(h(torch.ones(3, dtype=f64))),
     lambda A, B, mu: torch.tensor(math.sqrt(2), dtype=f64)),
]


@pytest.mark.parametrize('dtype', HALF, ids=['float16', 'bfloat16'])
@pytest.mark.parametrize('name,call,ref', DENSE_HALF, ids=[c[0] for c in DENSE_HALF])
def test_half_precision_dense_graphical_and_affine(name, call, ref, dtype):
    "A: an error naming the argument and the dtype (like the Krylov solvers'); or B: within rounding of float64."
    A, B, mu = _dense_pair()
    h = lambda t: t.to(dtype)
    def check(out):
        assert ref is not None, f'{name} returned {out}; no half-precision reference'
        torch.testing.assert_close(torch.as_tensor(out).double(), ref(A, B, mu), rtol=_half_tol(dtype), atol=_half_tol(dtype))
    a_or_b(lambda: call(A, B, mu, h), ['dwR', 'dxR', 'mu', 'p', 'w_bar', 'point', 'basis', 'w'], check, also=str(dtype))


# ================================================================ meta tensors in the dense functions and solvers

META_DENSE = [
    ('point_to_set_distance', lambda C: point_to_set_distance(C[0].to('meta'), C.to('meta')), ['w', 'C']),
    ('excess', lambda C: excess(C.to('meta'), C.to('meta')), ['C']),
    ('hausdorff', lambda C: hausdorff(C.to('meta'), C.to('meta')), ['C']),
    ('AffineSet', lambda C: AffineSet(C[0].to('meta'), C[:2].T.to('meta')), ['point', 'basis']),
    ('lipschitz_modulus', lambda C: lipschitz_modulus(torch.eye(3, dtype=f64, device='meta'), C[:3, :2].to('meta')), ['dwR']),
    ('graphical_derivative', lambda C: graphical_derivative(torch.eye(3, dtype=f64, device='meta'), C[:3, :2].to('meta'),
                                                           torch.ones(2, dtype=f64, device='meta')), ['dwR']),
    ('minres', lambda C: minres(torch.eye(3, dtype=f64, device='meta'), torch.ones(3, dtype=f64, device='meta')), ['A', 'b']),
    ('lsqr', lambda C: lsqr(torch.eye(3, dtype=f64, device='meta'), torch.ones(3, dtype=f64, device='meta')), ['A', 'b']),
    ('cgls', lambda C: cgls(torch.eye(3, dtype=f64, device='meta'), torch.ones(3, dtype=f64, device='meta')), ['A', 'b']),
    ('solution_shift-dX', lambda C: solution_shift(mlp_risk(), mlp_risk().X.to('meta')), ['dX', 'risk.X']),
    ('estimate_solution_set-dX', lambda C: estimate_solution_set(mlp_risk(), mlp_risk().X.to('meta'), n=2, seed=0), ['dX', 'risk.X']),
]


@pytest.mark.parametrize('name,call,names', META_DENSE, ids=[c[0] for c in META_DENSE])
def test_meta_in_dense_functions_and_solvers(name, call, names):
    C = torch.randn(5, 3, dtype=f64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=rf'^(?:{"|".join(map(E, names))})\b[^:]*: .*meta'):
        call(C)


# ================================================================ a right-hand side so large that the solve overflows

def _dense_shift_reference(r, dX):
    "Δw = −H⁺ J ΔX with H = ∇²_w R and J ΔX = ∂_t ∇_w R(w, X + tΔX) by torch.func on the plain formula of mlp_risk."
    names = [k for k, _ in r.model.named_parameters()]
    shapes = [p.shape for _, p in r.model.named_parameters()]
    def R(w, X):
        prm, i = {}, 0
        for k, s in zip(names, shapes):
            prm[k] = w[i:i + s.numel()].reshape(s); i += s.numel()
        return (0.5 * (functional_call(r.model, prm, (X,)) - r.Y) ** 2).sum(1).mean()
    H = hessian(R)(r.w, r.X)
    J = jacrev(grad(R), argnums=1)(r.w, r.X).reshape(r.p, -1)
    return -torch.linalg.pinv(H, hermitian=True) @ (J @ dX.reshape(-1))


def test_solution_shift_moderate_dX_matches_the_dense_solve():
    "B (the control for the next test): Δw for ΔX = X equals −H⁺ J ΔX from explicit matrices."
    r = mlp_risk()
    dw, info = solution_shift(r, r.X, rtol=1e-12, check=False)
    assert bool(info.converged)
    ref = _dense_shift_reference(r, r.X)
    torch.testing.assert_close(dw, ref, rtol=1e-7, atol=1e-9 * float(ref.abs().max()))


def test_solution_shift_huge_dX():
    """A: an error naming dX (as aif names `scale`); or B: by linearity, 1e200 times the dense Δw of ΔX = X, at the
    control's tolerance (rtol=1e-12: the default 1e-6 bounds the residual, not Δw's error, which is κ times larger).
    (Was xfail: the solvers overflowed in a squared norm once ‖b‖ ≳ 1e154 and returned Δw = 0.)"""
    r = mlp_risk()
    c = 1e200
    ref = c * _dense_shift_reference(r, r.X)
    assert bool(torch.isfinite(ref).all())
    def check(out):
        dw, info = out
        assert bool(info.converged)
        torch.testing.assert_close(dw / c, ref / c, rtol=1e-6, atol=1e-9 * float((ref / c).abs().max()))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a_or_b(lambda: solution_shift(r, c * r.X, rtol=1e-12, check=False), ['dX', 'risk'], check)


# ================================================================ found while fuzzing the solvers' operators

@pytest.mark.parametrize('solver', [minres, lsqr, cgls], ids=lambda s: s.__name__)
def test_sparse_matrix_operator(solver):
    "A: an error naming A (and saying to pass `lambda v: A @ v`); or B: the solution of the dense system (pinv)."
    A = torch.diag(torch.tensor([3., 2., 1.], dtype=f64)); A[0, 2] = A[2, 0] = 0.5
    b = torch.tensor([1., -2., 0.5], dtype=f64)
    def check(out):
        x, info = out
        assert bool(info.converged)
        torch.testing.assert_close(x, torch.linalg.pinv(A) @ b, rtol=1e-8, atol=1e-12)
    a_or_b(lambda: solver(A.to_sparse(), b), ['A'], check)


def _requires_grad_cases():
    from setsens.aif import aif
    r = mlp_risk()
    dX = r.X.clone().requires_grad_()
    return {
        'solution_shift-dX': (lambda: solution_shift(r, dX, check=False)[0], lambda: solution_shift(r, dX.detach(), check=False)[0]),
        'estimate_solution_set-dX': (lambda: estimate_solution_set(r, dX, n=2, seed=0, check=False)[0],
                                     lambda: estimate_solution_set(r, dX.detach(), n=2, seed=0, check=False)[0]),
        'aif-x0': (lambda: aif(r, 2, x0=r.w.clone().requires_grad_())[0], lambda: aif(r, 2, x0=r.w.clone())[0]),
        'minres-b': (lambda: minres(torch.eye(3, dtype=f64) * 2, torch.ones(3, dtype=f64, requires_grad=True))[0],
                     lambda: minres(torch.eye(3, dtype=f64) * 2, torch.ones(3, dtype=f64))[0]),
    }


@pytest.mark.parametrize('case', ['solution_shift-dX', 'estimate_solution_set-dX', 'aif-x0', 'minres-b'])
def test_solves_do_not_keep_the_arguments_graph(case):
    "B: the same values as with detached arguments, and no autograd graph attached to the result."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        got, ref = (f() for f in _requires_grad_cases()[case])
    torch.testing.assert_close(got.detach(), ref, rtol=1e-12, atol=1e-14)
    assert got.grad_fn is None and not got.requires_grad
