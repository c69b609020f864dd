"The README's quick start is what CI runs: the two commands must stay in step with `.ci/run`."
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _ci_vars():
    txt = (ROOT/'.ci'/'run').read_text()
    get = lambda k: re.search(rf"^{k}='(.*)'$", txt, re.M).group(1)
    return get('INSTALL'), get('TEST')

def test_readme_commands_are_ci_commands():
    install, test = _ci_vars()
    readme = (ROOT/'README.md').read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(block) == 2, "the quick start is exactly two commands"
    assert block[1] == f"{install} && {test}", "README's test command must be what .ci/run runs"
    assert block[0].startswith("pip install -e . && setsens ")

def test_settings_flags():
    ini = (ROOT/'settings.ini').read_text()
    assert re.search(r"^tst_flags = notest slow gpu$", ini, re.M)

def test_readme_is_generated_from_index():
    import subprocess, sys
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
