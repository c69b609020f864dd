"""`help()` shows each public function's parameters with their docments comments (issue 14), and `show_doc` still renders
only the short docstring."""
import inspect, pydoc, re
import pytest
from fastcore.docments import docments
from setsens.core import doc_params
from setsens.risk import Risk
from setsens.sets import hausdorff
from setsens.krylov import minres, lsqr, cgls
from setsens.graphical import solution_shift, estimate_solution_set, lipschitz_modulus, graphical_derivative, coderivative
from setsens.aif import aif, aif_confidence_interval, model_sensitivity
from setsens.robust import robust_fit
from setsens.lp import check_p, adversarial_direction, project_lp

PUBLIC = [Risk, Risk.__init__, Risk.from_function, hausdorff, minres, lsqr, cgls, solution_shift, estimate_solution_set,
          lipschitz_modulus, graphical_derivative, coderivative, aif, aif_confidence_interval, model_sensitivity, robust_fit,
          check_p, adversarial_direction, project_lp]

def _function(obj): return obj.__init__ if inspect.isclass(obj) else getattr(obj, '__func__', obj)

@pytest.mark.parametrize('obj', PUBLIC, ids=lambda o: o.__qualname__)
def test_help_lists_every_parameter_with_its_comment(obj):
    f = _function(obj)
    text = pydoc.render_doc(obj, renderer=pydoc.plaintext)
    lines = [l.strip().lstrip('|').strip() for l in text.splitlines()]   # a class's page prefixes '|'
    params = [k for k in inspect.signature(f).parameters if k not in ('self', 'cls')]
    comments = docments(f, returns=False)   # fastcore's reading of the source comments
    assert params and 'Parameters' in lines
    undocumented = []
    for k in params:
        heads = [i for i, l in enumerate(lines) if re.fullmatch(rf'\**{re.escape(k)}( : .*)?', l)]
        assert heads, f"{k} missing from help({obj.__qualname__})"
        c = comments.get(k)
        if c: assert lines[heads[0] + 1] == c.strip(), (k, lines[heads[0] + 1], c)
        else: undocumented.append(k)
    # only catch-all **kwargs may go without a comment
    assert all(inspect.signature(f).parameters[k].kind == inspect.Parameter.VAR_KEYWORD for k in undocumented), undocumented

def test_init_no_longer_initialize_self():
    text = pydoc.render_doc(Risk.__init__, renderer=pydoc.plaintext)
    assert 'Initialize self' not in text and 'the network f(x; w)' in text

def test_summary_first_and_show_doc_unchanged():
    from fastcore.docments import _docstring   # what nbdev's show_doc renders
    for obj in PUBLIC:
        doc = inspect.getdoc(obj)
        assert not doc.startswith('Parameters'), obj
        assert 'Parameters' not in _docstring(obj) and '----------' not in _docstring(obj), obj
        assert _docstring(obj) == doc.split('\n\nParameters\n')[0].strip(), obj

def test_idempotent_and_bad_input():
    before = solution_shift.__doc__
    assert doc_params(solution_shift).__doc__ == before
    with pytest.raises(TypeError, match='f: expected'): doc_params(len)
