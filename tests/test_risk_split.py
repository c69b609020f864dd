"""Issue 14 split setsens.risk (1067 lines) into setsens.risk_data (05: the point (w, X), `RiskData`), setsens.risk_checks
(06: what a risk refuses, `RiskChecks`, `check_eval_mode`) and setsens.risk (07: `BaseRisk`, `Risk`). The names of the
old module still import from setsens.risk, `Risk` has every method it had whenever setsens.risk is imported, and the
imports between the three ascend with the notebook numbers."""
import ast, subprocess, sys
from pathlib import Path
import setsens.risk as R, setsens.risk_data as D, setsens.risk_checks as C

PKG = Path(__file__).resolve().parents[1]/'setsens'

# the module-level names of setsens.risk before the split, but for the functions that `@patch` left behind under the
# names of the methods it added to Risk (now in risk_data: X, Y, n, x_shape, flatten, unflatten), which were never API
OLD_NAMES = ['BaseRisk', 'BatchSampler', 'DataLoader', 'Dataset', 'DistributedSampler', 'F', 'HessianOperator',
             'IdentityOperator', 'IterableDataset', 'LOSSES', 'LinearOperator', 'MixedOperator', 'REDUCTIONS',
             'RandomSampler', 'Risk', 'SequentialSampler', 'SubsetRandomSampler', 'TensorDataset', 'WeightedRandomSampler',
             'as_labels', 'bad_labels', 'bisect', 'check_eval_mode', 'check_idx', 'check_is_tensor', 'check_positive',
             'check_reduction', 'check_same', 'check_size', 'check_tensor', 'class_loss', 'copy', 'default_collate',
             'doc_params', 'elementwise_sum', 'fgrad', 'functional_call', 'functools', 'grad_and_value', 'inspect', 'jvp',
             'math', 'mse', 'nn', 'numbers', 'once_differentiable', 'patch', 'patch_to', 'resolve_loss', 'stated_reduction',
             'target_count', 'target_rule', 'torch', 'vjp', 'vmap', '_check_idx']

# every method and property of Risk before the split (from its `@patch`/`@patch_to` cells)
OLD_METHODS = ['X', 'Y', '__repr__', '_bad_row', '_check_batch', '_check_batch_size', '_check_buffers',
               '_check_custom_backward', '_check_function', '_check_mode', '_check_output', '_check_targets',
               '_check_twice_differentiable', '_chunks', '_cols', '_cols_aux', '_count', '_dx', '_finite', '_fsum',
               '_gather', '_hvp_trusted', '_loss_sum', '_probe', '_random_access', '_raw_batches', '_rhs', '_rows',
               '_scale', '_select', '_set_data', '_set_params', '_slices', '_state', '_stated', '_stream', '_unflat',
               '_xshape', '_ydtype', 'at', 'data_mean', 'device', 'dtype', 'flatten', 'from_function', 'grad', 'grad_x',
               'hvp', 'jx', 'jxT', 'loss', 'n', 'p', 'unflatten', 'value', 'w', 'x_shape', 'H', 'J', 'I', 'allsum', 'sharded']


def test_old_names_still_import_from_risk():
    missing = [n for n in OLD_NAMES if not hasattr(R, n)]
    assert missing == [], missing
    assert R.check_eval_mode is C.check_eval_mode and 'check_eval_mode' in R.__all__   # re-exported, not deprecated
    assert {'Risk', 'BaseRisk', 'check_eval_mode'} <= set(R.__all__)
    assert R._check_idx is R.check_idx


def test_risk_is_complete_when_imported_alone():
    "In a fresh process that imports only setsens.risk, Risk has every method it had before the split."
    code = (f"import setsens.risk as R; m = {OLD_METHODS!r}; miss = [k for k in m if not hasattr(R.Risk, k)]; "
            f"assert not miss, miss; assert issubclass(R.Risk, R.BaseRisk); print('ok')")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PKG.parent)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]


def test_parts_are_mixins_of_risk():
    assert issubclass(R.Risk, D.RiskData) and issubclass(R.Risk, C.RiskChecks)
    assert R.Risk._stream is D.RiskData._stream and R.Risk._probe is C.RiskChecks._probe   # defined once, inherited


def _setsens_imports(mod):
    tree = ast.parse((PKG/f'{mod}.py').read_text(encoding='utf-8'))
    return {n.module.split('.')[-1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            and (n.level == 1 or n.module.startswith('setsens.'))}


def test_imports_ascend_with_the_notebook_numbers():
    "risk_data (05), risk_checks (06) and second_order (06a) import only core, losses (00–04); risk (07) imports them; none imports a higher one."
    low = {'core', 'data', 'sets', 'linalg', 'losses'}
    assert _setsens_imports('risk_data') <= low
    assert _setsens_imports('risk_checks') <= low
    assert _setsens_imports('second_order') <= low   # 06a
    assert _setsens_imports('risk') <= low | {'risk_data', 'risk_checks', 'second_order'}
    assert {'risk_data', 'risk_checks'} <= _setsens_imports('risk')


def test_modules_stay_small():
    "Issue 14: no module over ~400 lines."
    sizes = {m: len((PKG/f'{m}.py').read_text(encoding='utf-8').splitlines()) for m in ('risk', 'risk_data', 'risk_checks')}
    assert max(sizes.values()) <= 420, sizes
