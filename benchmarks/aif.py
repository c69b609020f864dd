"""AIF (Krylov) against the PGD robust training run it replaces, for an MLP of about 100k parameters on 10k samples.

Run from the repository root:  .venv/bin/python benchmarks/aif.py
Smaller/faster:                 .venv/bin/python benchmarks/aif.py --n 2000 --width 100

The network is trained briefly (full-batch Adam, early-stopped at θ̃) and both sides then work with Section 4.1's damped
surrogate around θ̃: the objective R(θ) + ½λ‖θ − θ̃‖² − ∇R(θ̃)ᵀθ, whose ε = 0 solution is exactly θ̃ and whose
Hessian there is Ĥ + λI (`robust_fit(..., weight_decay=λ, anchor=θ̃)`). The AIF predicts θ̂_ε − θ̃ ≈ ε·Î with
Î = −(Ĥ + λI)⁻¹Φ (`aif(..., damping=λ)`, one MINRES solve); the ground truth is one PGD robust training run
(PGD inner maximisation, L-BFGS outer, started at θ̃, to a gradient tolerance). This avoids training the 100k-parameter
network to a true minimum, which the comparison does not need. Times are measured in one run, side by side, so the
ratio is meaningful on a shared machine.
"""
import argparse, math, time, warnings
import torch
from torch import nn
from setsens.risk import Risk
from setsens.aif import aif
from setsens.robust import robust_fit


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=10_000, help='training samples')
    ap.add_argument('--d', type=int, default=50, help='input dimension')
    ap.add_argument('--width', type=int, default=300, help='hidden width (two hidden layers)')
    ap.add_argument('--classes', type=int, default=10)
    ap.add_argument('--damping', type=float, default=None, help='λ (default: 2·|most negative eigenvalue| from Lanczos, at least 1e-3)')
    ap.add_argument('--adam-steps', type=int, default=30, help='full-batch Adam steps to θ̃')
    ap.add_argument('--eps', type=float, default=1e-3, help='attack size ε (radius ε·Ê‖x‖_p)')
    ap.add_argument('--p', type=float, default=2.)
    ap.add_argument('--pgd-steps', type=int, default=3)
    ap.add_argument('--gtol', type=float, default=None, help='gradient tolerance of the robust training (default 1e-8 float64, 1e-5 float32)')
    ap.add_argument('--rtol', type=float, default=None, help='MINRES tolerance (default 1e-8 float64, 1e-5 float32)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--dtype', choices=['float32', 'float64'], default='float32')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    f64 = a.dtype == 'float64'
    a.gtol = a.gtol or (1e-8 if f64 else 1e-5)
    a.rtol = a.rtol or (1e-8 if f64 else 1e-5)
    torch.set_num_threads(a.threads)
    dt = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(a.seed)
    X = torch.randn(a.n, a.d, generator=g, dtype=dt)
    teacher = nn.Sequential(nn.Linear(a.d, 64), nn.Tanh(), nn.Linear(64, a.classes)).to(dt)
    with torch.no_grad():
        logits = teacher(X) * 3
        Y = torch.distributions.Categorical(logits=logits).sample()        # noisy labels: a finite minimum
    torch.manual_seed(a.seed)
    model = nn.Sequential(nn.Linear(a.d, a.width), nn.Tanh(), nn.Linear(a.width, a.width), nn.Tanh(),
                          nn.Linear(a.width, a.classes)).to(dt)
    t = time.perf_counter()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(a.adam_steps):
        opt.zero_grad(); nn.functional.cross_entropy(model(X), Y).backward(); opt.step()
    r = Risk(model, 'cross_entropy', X, Y)
    t_fit = time.perf_counter() - t
    from setsens.linalg import lanczos
    t = time.perf_counter()
    theta, res, m = lanczos(r.hvp, r.p, 30, r.dtype, r.device, residuals=True)
    lam = a.damping if a.damping is not None else max(1e-3, -2 * float(theta[0]))
    t_lan = time.perf_counter() - t
    print(f'MLP {a.d}-{a.width}-{a.width}-{a.classes} (tanh): {r.p:,} parameters, n = {a.n:,}, {a.dtype}, {a.threads} threads; '
          f'θ̃ after {a.adam_steps} Adam steps (R = {float(r.value()):.3f}, ‖∇R‖ = {float(r.grad().norm()):.2e}); '
          f'Lanczos: λ_min(Ĥ) ≈ {float(theta[0]):.3g}, λ_max ≈ {float(theta[-1]):.3g} → λ = {lam:.3g}; '
          f'l_{a.p:g} attack, ε = {a.eps:g}', flush=True)
    w_hat = r.w
    t = time.perf_counter()
    I, info = aif(r, a.p, damping=lam, rtol=a.rtol)
    t_aif = time.perf_counter() - t
    print(f'AIF: {t_aif:.1f} s, {info.solver.iterations} MINRES iterations, converged {info.converged}', flush=True)

    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        w_eps, ri = robust_fit(r, a.eps, a.p, weight_decay=lam, anchor=w_hat, max_iter=3000, gtol=a.gtol,
                               pgd_steps=a.pgd_steps)
    t_pgd = time.perf_counter() - t
    print(f'PGD robust training: {t_pgd:.1f} s, {ri.iterations} evaluations × {a.pgd_steps} PGD steps, '
          f'‖∇‖ = {ri.grad_norm:.1e}, converged {ri.converged}', flush=True)

    dw = w_eps - w_hat
    rel = float((a.eps * I - dw).norm() / dw.norm())
    cos = float(I @ dw / (I.norm() * dw.norm()))
    rows = [('setup: θ̃ (Adam) + Lanczos for λ', f'{t_fit:.1f} + {t_lan:.1f}', f'{a.adam_steps} Adam steps, 30 HVPs', f'λ = {lam:.3g}'),
            ('AIF, Krylov (`aif`, damping = λ)', f'{t_aif:.1f}', f'{info.solver.iterations} MINRES iterations (HVPs)',
             f'converged {info.converged}'),
            ('PGD robust training (`robust_fit`, anchor = θ̃)', f'{t_pgd:.1f}',
             f'{ri.iterations} L-BFGS evaluations × ({a.pgd_steps} PGD + 1) gradients', f'‖∇‖ = {ri.grad_norm:.1e}'),
            ('time ratio PGD / AIF', f'{t_pgd / t_aif:.1f}×', '', ''),
            ('relative error ‖εÎ − (θ̂_ε − θ̃)‖ / ‖θ̂_ε − θ̃‖', f'{rel:.3g}', f'cosine {cos:.4f}',
             f'‖θ̂_ε − θ̃‖ = {float(dw.norm()):.3g}')]
    print()
    print('| step | seconds | work | note |')
    print('|---|---|---|---|')
    for row in rows: print('| ' + ' | '.join(row) + ' |')


if __name__ == '__main__':
    main()
