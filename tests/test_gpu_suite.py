"The prepared GPU run (issue 17) runs end to end on CPU with --dry-run: every section, the same code paths, toy sizes."
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_dry_run(tmp_path):
    out = tmp_path/'gpu_suite.md'
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_suite.py'), '--dry-run', '--out', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**__import__('os').environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    md = out.read_text()
    for head in ('## 1. One HVP', '## 2. k = 2 right-hand sides', '## 3. Table 1', "## 4. `pinv_solve` at dattri's MLP size", "## 5. The notebooks' `#| gpu` cells",
                 '## 6. `torch.compile` of the HVP'):
        assert head in md, head
    assert 'failed' not in md.split('Total:')[0].lower()
    # section 1: every HVP mode has a row with a finite ratio to one gradient and an error against the float64 oracle
    for mode in ('rev_rev', 'fwd_rev', 'rev_rev_cached'):
        rows = [l for l in md.splitlines() if l.startswith('| ') and f'HVP {mode} |' in l]
        assert len(rows) == 2, (mode, rows)
        for l in rows:
            ratio = float(l.split('|')[4])
            assert 0 < ratio < 100
            assert re.search(r'rel\. error vs float64 \d', l)
    # section 1: the ablation without FastSecondOrder (chapter 06a), one call and in a solve, checked against the oracle
    rows = [l for l in md.splitlines() if l.startswith('| ') and 'no FastSecondOrder (ablation)' in l]
    assert len(rows) == 4 and all(re.search(r'rel\. error vs float64 \d', l) for l in rows), rows
    # section 3: both rows with a residual and finite losses
    t1 = md.split('## 3.')[1].split('## 4.')[0]
    assert len([l for l in t1.splitlines() if re.match(r'\| [12] \|', l)]) == 2
    # section 4: both solves, finite, and their agreement printed
    t4 = md.split('## 4.')[1].split('## 5.')[0]
    assert len([l for l in t4.splitlines() if re.match(r'\| (block|lanczos) \| \d', l)]) == 2 and '‖X_block − X_lanczos‖' in t4
    # section 6: the eager rows at toy size (nothing compiled in a dry run), each with a finite ratio to one gradient
    t6 = md.split('## 6.')[1].split('Total:')[0]
    rows = [l for l in t6.splitlines() if l.startswith('| gradient') or l.startswith('| HVP')]
    assert len(rows) == 3 and all(0 < float(l.split('|')[3]) < 100 for l in rows) and 'nothing compiled' in t6, t6
