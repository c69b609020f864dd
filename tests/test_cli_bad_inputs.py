"""Bad input: cli (moved from test_bad_inputs.py, issue 8 §2; one file per module by issue 14).

Every case asserts the exception type *and* that the message names the problem."""

import pytest
import torch


from bad_inputs_common import raises


# ================================================================ setsens.cli

@pytest.mark.parametrize('argv,msg', [
    ([], 'the following arguments are required: COMMAND'),
    (['bogus'], "invalid choice: 'bogus'"),
    (['toy', '--device', 'tpu'], "argument --device: invalid choice: 'tpu'"),
    (['toy', '--bogus'], 'unrecognized arguments: --bogus'),
    (['reproduce', '--out'], 'argument --out: expected one argument'),
    pytest.param(['toy', '--device', 'cuda'], '--device cuda: no CUDA device is available here',
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available here')),
], ids=['no-command', 'unknown-command', 'bad-device', 'unknown-option', 'missing-value', 'cuda-absent'])
def test_cli_bad_args(argv, msg, capsys):
    from setsens.cli import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_run_study_unknown():
    from setsens.cli import run_study
    with raises(ValueError, "name: unknown study 'nope'"):
        run_study('nope')
