"""Attribution against ground truth (issue 16): exact H⁺ solves on a singular MLP, and leave-one-out re-training of MNIST
logistic regression. Prints markdown tables.

Run from the repository root:   .venv/bin/python benchmarks/attribution.py
Smaller/faster:                  .venv/bin/python benchmarks/attribution.py --n 1000 --loo 20
Many queries only:               .venv/bin/python benchmarks/attribution.py --parts c --threads 1

Part A (accuracy on a singular, ill-conditioned Hessian): tanh MLP 49-48-10 on 40 real MNIST training images (28×28
average-pooled to 7×7), MSE on one-hot targets, trained (L-BFGS, then minimum-norm Gauss–Newton steps, float64) to interpolation. Oracle: the dense Hessian
(`torch.func.hessian`) and its eigendecomposition; we compare `pinv_solve` (filtered Lanczos) and `setsens.krylov.minres`
with H⁺g for the gradients of 10 test losses, and the influence scores built on each with the dense pseudo-inverse scores.

Part B (ground truth by re-training): logistic regression 784×10 on the first n MNIST training images (5,000 as in dattri),
500 test images, R = mean cross-entropy + (l2/2)‖w‖² (the L2 term is in every row's loss, so removing a row leaves it
whole). w̄ is trained by full-batch L-BFGS, then Newton's method with MINRES steps; every leave-one-out solution starts at
w̄ and iterates w ← w − P⁻¹∇R₋ᵢ(w), P the leave-one-out Hessian at w̄ (the closed-form dense Hessian H̄ with row i's
curvature taken out, by Woodbury on its Cholesky factor), all in float64, to ‖∇R₋ᵢ‖ ≤ gtol (the fixed point is the
minimiser whatever the preconditioner; the gradient norm certifies it). Query: the mean test loss. Pearson/Spearman of predicted vs actual change, no damping; first order (`influence_scores`)
and one Newton step per removed row with the query evaluated at it (`loo_scores`).
Part C (many queries): scores for each of 500 test points at p = 1,690 in one block Krylov solve, against one Lanczos
solve per query (timed on the first 32, scaled) and against the one-query mean-test-loss callable.

Part D (MNIST MLP LOO + LDS): tanh MLP 49-16-10 on 1,000 7×7 MNIST images with weight decay outside the risk; 50 LOO and
50 random-half re-trainings, each by warm-start Newton steps from w̄ to ‖∇‖ ≤ gtol (see `part_d`).

Part E (poisoning audit of the pretrained ResNet-56, `setsens.resnet_study.last_layer_audit`): the final layer (650
weights) on the first --audit-n CIFAR-10 training images, mean cross-entropy + (1e-3/2)‖w‖², re-fitted by Newton; the
top --audit-k images by sensitivity modulus and 5 random k-sets are perturbed by t = 1e-3 along their worst direction in
pixel space and the layer is re-trained by Newton to ‖∇‖ ≤ 1e-12. `--device cuda` for the paper size (1000 images, k = 10).
"""
import argparse, math, time, warnings
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from setsens.risk import Risk
from setsens.kernels import load_mnist
from setsens.krylov import minres
from setsens.attribution import pinv_solve, influence_scores, loo_scores

f64 = torch.float64


def pearson(a, b):
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a, b):
    r = lambda x: np.argsort(np.argsort(np.asarray(x, float).ravel()))
    return pearson(r(a), r(b))


def lbfgs(params, loss, gtol, max_rounds=200):
    "Full-batch L-BFGS (strong Wolfe) until the gradient norm is ≤ gtol or no progress; returns the final gradient norm."
    opt = torch.optim.LBFGS(params, lr=1, max_iter=500, history_size=100, tolerance_grad=gtol/10,
                            tolerance_change=0, line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = loss(); l.backward(); return l
    gn = math.inf
    for _ in range(max_rounds):
        opt.step(closure)
        opt.zero_grad(); loss().backward()
        g = torch.cat([p.grad.reshape(-1) for p in params]).norm().item()
        if g <= gtol or g >= gn: gn = min(g, gn); break
        gn = g
    return gn


def newton(fn, P, X, Y, gtol, steps=20):
    """Newton's method with MINRES (`setsens.krylov.minres`, a different solver than the attribution's Lanczos) for the
    step, from the parameter dict P, until ‖∇‖ ≤ gtol; returns (flat w, final gradient norm, Newton steps)."""
    r = Risk.from_function(fn, {k: v.detach().clone() for k, v in P.items()}, X, Y)
    for k in range(steps):
        g = r.grad()
        gn = float(g.norm())
        if gn <= gtol: return r.w, gn, k
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            d, _ = minres(r.hvp, -g, rtol=1e-12, maxiter=2000)
        r = r.at(w=r.w + d)
    return r.w, float(r.grad().norm()), steps


def lr_hessian(w, X, lam):
    """The dense Hessian of mean cross-entropy + (lam/2)‖w‖² for logistic regression, by its closed form
    (1/n) Σ_i (diag p_i − p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ + lam·I, in the flat order [W (10×d row-major), b (10)]."""
    n, d = X.shape
    C = 10
    Xt = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], 1)
    W, b = w[:C*d].view(C, d), w[C*d:]
    P = torch.softmax(X @ W.T + b, 1)
    H = torch.zeros(C, d + 1, C, d + 1, dtype=X.dtype)
    for c in range(C):
        for e in range(c, C):
            wt = P[:, c]*(float(c == e) - P[:, e])
            blk = (Xt*wt[:, None]).T @ Xt/n
            H[c, :, e] = blk
            if e != c: H[e, :, c] = blk.T
    H = H.reshape(C*(d + 1), C*(d + 1))
    perm = torch.tensor([c*(d + 1) + a for c in range(C) for a in range(d)] + [c*(d + 1) + d for c in range(C)])
    return H[perm][:, perm] + lam*torch.eye(C*(d + 1), dtype=X.dtype)


def loo_newton(fn, w, X, Y, i, L, lam, gtol, unflat, steps=50):
    """Leave row i out and re-train from w̄: w ← w − P⁻¹∇R₋ᵢ(w), P = H̄ − (1/n)(diag p_i − p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ, the
    leave-one-out Hessian at w̄ (up to a (λ/n)I term), applied by Woodbury with the Cholesky factor L of the dense H̄.
    P is a preconditioner only: the fixed point is the minimiser, certified by ‖∇R₋ᵢ‖ ≤ gtol. Returns (w, ‖∇‖, steps)."""
    n, d = X.shape
    keep = torch.arange(n) != i
    Xk, Yk = X[keep], Y[keep]
    x = torch.cat([X[i], torch.ones(1, dtype=X.dtype)])
    p_ = torch.softmax(unflat(w)['W'] @ X[i] + unflat(w)['b'], 0)
    B = (torch.diag(p_) - torch.outer(p_, p_))/n
    U = torch.zeros(10*(d + 1), 10, dtype=X.dtype)
    for c in range(10): U[c*d:(c + 1)*d, c] = X[i]; U[10*d + c, c] = 1.
    HU = torch.cholesky_solve(U, L)
    S = torch.eye(10, dtype=X.dtype) - B @ (U.T @ HU)
    solve = lambda g: (lambda h: h + HU @ torch.linalg.solve(S, B @ (U.T @ h)))(torch.cholesky_solve(g[:, None], L)[:, 0])
    for k in range(steps):
        wv = w.detach().requires_grad_()
        g, = torch.autograd.grad(fn(unflat(wv), Xk, Yk), wv)
        gn = float(g.norm())
        if gn <= gtol: return w.detach(), gn, k
        w = w.detach() - solve(g)
    return w.detach(), gn, steps


def part_a(a):
    xs, ys = load_mnist('train')
    X = torch.tensor(xs[:40], dtype=f64).div(255).reshape(40, 1, 28, 28)
    X = F.avg_pool2d(X, 4).reshape(40, 49)
    Y = F.one_hot(torch.tensor(ys[:40]).long(), 10).to(f64)
    xt, yt = load_mnist('test')
    Xt = F.avg_pool2d(torch.tensor(xt[:10], dtype=f64).div(255).reshape(10, 1, 28, 28), 4).reshape(10, 49)
    Yt = F.one_hot(torch.tensor(yt[:10]).long(), 10).to(f64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(49, 48), nn.Tanh(), nn.Linear(48, 10)).double()
    opt = torch.optim.LBFGS(net.parameters(), max_iter=3000, history_size=100, tolerance_grad=1e-13, tolerance_change=0,
                            line_search_fn='strong_wolfe')
    def closure():
        opt.zero_grad(); l = 0.5*((net(X) - Y)**2).sum(1).mean(); l.backward(); return l
    opt.step(closure)
    r = Risk(net, 'mse', X, Y)
    out = lambda w: torch.func.functional_call(net, r.unflatten(w), (X,)).reshape(-1)
    for _ in range(8):        # Gauss–Newton with minimum-norm steps: zero residual, quadratic convergence to interpolation
        w = r.w
        r = r.at(w=w - torch.linalg.pinv(torch.func.jacrev(out)(w)) @ (out(w) - Y.reshape(-1)))
    net = r.model
    with torch.no_grad(): torch.nn.utils.vector_to_parameters(r.w, net.parameters())
    gn = float(r.grad().norm())
    t0 = time.perf_counter()
    H = torch.func.hessian(lambda w: r._fsum(w, X, Y)*r._scale)(r.w)
    ev, V = torch.linalg.eigh(H)
    t_dense = time.perf_counter() - t0
    rank = int((ev.abs() > r.p*torch.finfo(f64).eps*ev.abs().max()).sum())
    pos = ev[ev.abs() > r.p*torch.finfo(f64).eps*ev.abs().max()].abs()
    Hp = torch.linalg.pinv(H, hermitian=True)
    rowl = lambda w, x, y: 0.5*((torch.func.functional_call(net, r.unflatten(w), (x[None],)) - y[None])**2).sum()
    G = torch.func.vmap(torch.func.grad(rowl), (None, 0, 0))
    Gq, Gt = G(r.w, Xt, Yt), G(r.w, X, Y)
    ref = Hp @ Gq.T
    ref_scores = Gq @ Hp @ Gt.T / r.n
    rows = []
    t0 = time.perf_counter()
    Z, info = pinv_solve(r, Gq.T.contiguous())
    t_l = time.perf_counter() - t0
    rel = lambda x: float((x - ref).norm()/ref.norm())
    rows.append(('setsens pinv_solve (filtered Lanczos)', rel(Z), float(info.normres.max()), int(info.iterations.max()),
                 info.kernel_dim_estimate, pearson(Z.T @ Gt.T, ref_scores), t_l))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        t0 = time.perf_counter()
        Zm, mi = minres(r.hvp, Gq.T.contiguous(), rtol=1e-6)
        t_m = time.perf_counter() - t0
    rows.append(('setsens.krylov.minres (rtol 1e-6)', rel(Zm), float(mi.rel_normres.max()), mi.iterations, None,
                 pearson(Zm.T @ Gt.T, ref_scores), t_m))
    K = [0, 1, 2, 3]
    J = torch.func.jacrev(lambda X_: torch.func.grad(lambda w: r._fsum(w, X_, Y)*r._scale)(r.w))(X)[:, K].reshape(r.p, -1)
    from setsens.graphical import lipschitz_modulus
    from setsens.attribution import sensitivity_modulus
    k64, k32 = lipschitz_modulus(H, J), lipschitz_modulus(H.float(), J.float())
    t0 = time.perf_counter()
    kmf = sensitivity_modulus(r, K)
    t_k = time.perf_counter() - t0
    kdense = float(torch.linalg.matrix_norm(Hp @ J, 2))
    r32 = int((ev.abs() > r.p*torch.finfo(torch.float32).eps*ev.abs().max()).sum())
    print(f"\n### A. Singular MLP 49-48-10, 40 MNIST images (p = {r.p}; training loss {float(r.value()):.2e}, "
          f"‖∇R‖ = {float(r.grad().norm()):.1e} (L-BFGS, then Gauss–Newton); numerical rank {rank} (p·eps cut-off), "
          f"eigenvalues {float(pos.max()):.3g} … {float(pos.min()):.3g}; dense Hessian + eigh {t_dense:.1f} s)\n")
    print("| solver | ‖x − H⁺g‖/‖H⁺g‖ | rel. normal residual | HVP steps | kernel dim estimate | Pearson vs dense-pinv scores | seconds |")
    print("|---|---|---|---|---|---|---|")
    for n_, e, nr, it, kd, pc, t in rows:
        print(f"| {n_} | {e:.2e} | {nr:.1e} | {it} | {'–' if kd is None else kd} (dense {r.p - rank}) | {pc:.6f} | {t:.2f} |")
    print(f"\nModulus of the set K = {K} (4 images, 196 input numbers): matrix-free sensitivity_modulus {kmf:.6g} "
          f"({t_k:.1f} s); dense ‖H⁺J_K‖₂ {kdense:.6g}; graphical.lipschitz_modulus float64 {k64:.6g}, float32 {k32} "
          f"(float32's default rank tolerance p·eps₃₂ keeps {r32} of the {rank} eigenvalues that float64 keeps; J_K has "
          f"weight on the dropped ones, so the range test fails and it returns inf)")


def part_b(a):
    xs, ys = load_mnist('train')
    xt, yt = load_mnist('test')
    X = torch.tensor(xs[:a.n], dtype=f64).reshape(a.n, -1).div(255)
    Y = torch.tensor(ys[:a.n]).long()
    Xt = torch.tensor(xt[:a.ntest], dtype=f64).reshape(a.ntest, -1).div(255)
    Yt = torch.tensor(yt[:a.ntest]).long()
    lam = a.l2

    def fn(P, X_, Y_):
        return F.cross_entropy(X_ @ P['W'].T + P['b'], Y_) + 0.5*lam*(P['W'].pow(2).sum() + P['b'].pow(2).sum())

    W = torch.zeros(10, 784, dtype=f64, requires_grad=True)
    b = torch.zeros(10, dtype=f64, requires_grad=True)
    t0 = time.perf_counter()
    lbfgs([W, b], lambda: fn({'W': W, 'b': b}, X, Y), 1e-6)
    w0, gn, _ = newton(fn, {'W': W, 'b': b}, X, Y, a.gtol)
    t_train = time.perf_counter() - t0
    P0 = {'W': w0[:7840].view(10, 784), 'b': w0[7840:]}
    risk = Risk.from_function(fn, P0, X, Y)
    q = lambda w: fn(risk.unflatten(w), Xt, Yt) - 0.5*lam*w.pow(2).sum()      # the mean test cross-entropy
    t0 = time.perf_counter()
    S, info = influence_scores(risk, q)
    t_s = time.perf_counter() - t0
    idx = torch.randperm(a.n, generator=torch.Generator().manual_seed(a.seed))[:a.loo]
    q0 = float(q(risk.w))
    t0 = time.perf_counter()
    L = torch.linalg.cholesky(lr_hessian(risk.w, X, lam))
    t_h = time.perf_counter() - t0
    actual, gns, t0 = [], [], time.perf_counter()
    keep = torch.ones(a.n, dtype=torch.bool)
    for i in idx.tolist():
        keep[i] = False
        wi, g, _ = loo_newton(fn, risk.w, X, Y, i, L, lam, a.gtol, risk.unflatten)   # warm start at w̄
        keep[i] = True
        gns.append(g)
        with torch.no_grad(): actual.append(float(q(wi)) - q0)
    t_loo = time.perf_counter() - t0
    pred = S[0, idx].numpy()
    t0 = time.perf_counter()
    S_nt, i_nt = loo_scores(risk, q, idx)            # one Newton step per removed row, the query evaluated at it
    t_nt = time.perf_counter() - t0
    if a.save:      # the set-up and the ground truth, for the peers (benchmarks/peers/, run in their own environment)
        torch.save({'X': X, 'Y': Y, 'Xt': Xt, 'Yt': Yt, 'w': risk.w, 'lam': lam, 'idx': idx,
                    'actual': torch.tensor(actual, dtype=f64), 'ours': S[0].clone(), 'ours_seconds': t_s}, a.save)
    print(f"\n### B. MNIST logistic regression, leave-one-out (n = {a.n}, {a.ntest} test images, l2 = {lam:g}, p = {risk.p})\n")
    print(f"w̄: L-BFGS then Newton–MINRES, float64, to ‖∇R‖ = {gn:.1e} in {t_train:.1f} s; scores for all n: {t_s:.2f} s "
          f"({int(info.solve.iterations.max())} Lanczos steps, status {info.solve.status}, normres {float(info.solve.normres.max()):.1e}, "
          f"kernel dim estimate {info.solve.kernel_dim_estimate}); {a.loo} LOO re-trainings (warm-started at w̄; Newton-type steps "
          f"with the leave-one-out Hessian at w̄ (Woodbury on the dense Hessian, built and factored in {t_h:.1f} s)) in {t_loo:.1f} s, max final ‖∇R₋ᵢ‖ = {max(gns):.1e}\n")
    act = torch.tensor(actual, dtype=f64)
    err = lambda v: float((torch.as_tensor(v, dtype=f64) - act).norm()/act.norm())
    nt = S_nt[0].numpy()
    print("| method | damping | Pearson | Spearman | ‖pred − actual‖/‖actual‖ | LOO points | seconds | max ‖∇R₋ᵢ‖ |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| setsens influence_scores (H⁺, exact solve; first order) | 0 | {pearson(pred, actual):.4f} | {spearman(pred, actual):.4f} | "
          f"{err(pred):.3f} | {a.loo} | {t_s:.1f} (all n) | {max(gns):.1e} |")
    print(f"| setsens loo_scores (one Newton step per row, query evaluated) | 0 | {pearson(nt, actual):.4f} | {spearman(nt, actual):.4f} | "
          f"{err(nt):.3f} | {a.loo} | {t_nt:.1f} | {max(gns):.1e} |")
    print(f"\nloo_scores: {a.loo} solves with H − sH_i, at most {max(int(i_.iterations.max()) for i_ in i_nt.solves)} Lanczos "
          f"steps, normal residual ≤ {max(float(i_.normres.max()) for i_ in i_nt.solves):.1e}; the Newton step with the query "
          f"linearised: Pearson {pearson(i_nt.linear[0].numpy(), actual):.4f}; trust-region ratio ρ "
          f"{float(i_nt.rho.min()):.4f} … {float(i_nt.rho.max()):.4f}")


def part_c(a):
    """Many queries (issue 16, round 2): scores for every one of m test points at p ≈ 1.7k, one Krylov space shared by all
    m query gradients ('block') against one space per query ('lanczos', timed on the first --lanczos-queries and scaled),
    and the one-solve alternative when only the mean test loss matters."""
    xs, ys = load_mnist('train')
    xt, yt = load_mnist('test')
    pool = lambda x: F.avg_pool2d(torch.tensor(x, dtype=f64).div(255)[:, None], 4).flatten(1)
    n, m, mu = 1000, a.queries, 1e-3
    X, Y, Xt, Yt = pool(xs[:n]), torch.tensor(ys[:n]).long(), pool(xt[:m]), torch.tensor(yt[:m]).long()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(49, 28), nn.Tanh(), nn.Linear(28, 10)).double()
    params = list(net.parameters())
    lbfgs(params, lambda: F.cross_entropy(net(X), Y) + 0.5*mu*sum(p_.pow(2).sum() for p_ in params), 1e-9)
    r = Risk(net, F.cross_entropy, X, Y)
    print(f"\n### C. Scores for m = {m} test points, tanh MLP 49-28-10 (p = {r.p}), n = {n} MNIST images (7×7), "
          f"weight decay μ = {mu:g} outside the risk (weight_decay=μ)\n")
    print("| what | solve | HVP columns | Krylov steps | seconds | rel. diff. vs block |")
    print("|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    S, info = influence_scores(r, (Xt, Yt), weight_decay=mu, method='block')
    tb = time.perf_counter() - t0
    print(f"| all {m} test points | block (one shared Krylov space) | {info.solve.hvps} | {int(info.solve.iterations.max())} | {tb:.1f} | 0 |", flush=True)
    k = a.lanczos_queries
    t0 = time.perf_counter()
    Sl, il = influence_scores(r, (Xt[:k], Yt[:k]), weight_decay=mu, method='lanczos')
    tl = time.perf_counter() - t0
    d = float((Sl - S[:k]).norm()/S[:k].norm())
    print(f"| first {k} test points | lanczos (a space per query) | {il.solve.hvps} | {int(il.solve.iterations.max())} | "
          f"{tl:.1f} (× {m/k:.1f} ≈ {tl*m/k:.0f} for all {m}) | {d:.1e} |", flush=True)
    q = lambda w: F.cross_entropy(torch.func.functional_call(net, r.unflatten(w), (Xt,)), Yt)
    t0 = time.perf_counter()
    Sq, iq = influence_scores(r, q, weight_decay=mu)
    tq = time.perf_counter() - t0
    d = float((Sq[0] - S.mean(0)).norm()/Sq[0].norm())
    print(f"| mean test loss (a callable: one query) | lanczos | {iq.solve.hvps} | {int(iq.solve.iterations.max())} | {tq:.1f} | "
          f"{d:.1e} (vs the mean of the {m} rows) |")


def part_d(a):
    """MNIST MLP: leave-one-out and the linear datamodeling score (LDS) by deterministic warm-start re-training.
    tanh MLP 49-H-10 on 7×7-pooled MNIST, mean cross-entropy + weight decay μ outside the risk, float64. Every
    re-training starts at w̄ and takes Newton steps with the dense Hessian (`torch.func.hessian`, Levenberg-damped when
    needed) to ‖∇‖ ≤ gtol: the same local minimiser, so the ground truth has no seed noise. LOO: --mlp-loo points.
    LDS: --lds random halves; per test point, Spearman over the subsets between Σ_{i∉S} score_i and the re-trained change
    of that test point's loss, averaged over test points (dattri's definition, with re-training instead of seeds)."""
    xs, ys = load_mnist('train')
    xt, yt = load_mnist('test')
    pool = lambda x: F.avg_pool2d(torch.tensor(x, dtype=f64).div(255)[:, None], 4).flatten(1)
    n, nt, mu, hid = a.mlp_n, a.mlp_ntest, 1e-3, a.hidden
    X, Y, Xt, Yt = pool(xs[:n]), torch.tensor(ys[:n]).long(), pool(xt[:nt]), torch.tensor(yt[:nt]).long()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(49, hid), nn.Tanh(), nn.Linear(hid, 10)).double()
    r0 = Risk(net, F.cross_entropy, X, Y)
    fc = lambda w, X_: torch.func.functional_call(net, r0.unflatten(w), (X_,))
    obj = lambda w, X_, Y_: F.cross_entropy(fc(w, X_), Y_) + 0.5*mu*w.pow(2).sum()
    def newton(w, X_, Y_, steps=50):
        f = lambda w: obj(w, X_, Y_)
        for k in range(steps):
            g = torch.func.grad(f)(w)
            if float(g.norm()) <= a.gtol: return w, float(g.norm())
            Hm = torch.func.hessian(f)(w)
            lm = 0.
            while True:
                d = torch.linalg.solve(Hm + lm*torch.eye(len(w), dtype=f64), g)
                if float(f(w - d)) <= float(f(w)) or lm > 1e6: break
                lm = max(10*lm, 1e-6)
            w = w - d
        return w, float(torch.func.grad(f)(w).norm())
    t0 = time.perf_counter()
    params = list(net.parameters())
    lbfgs(params, lambda: obj(torch.cat([p_.reshape(-1) for p_ in params]), X, Y), 1e-8)
    w0, gn = newton(torch.cat([p_.detach().reshape(-1) for p_ in params]), X, Y)
    r = r0.at(w=w0)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    S, info = influence_scores(r, (Xt, Yt), weight_decay=mu)                  # (nt, n): one block solve
    t_s = time.perf_counter() - t0
    tl = lambda w: F.cross_entropy(fc(w, Xt), Yt, reduction='none')           # per-test-point losses
    q0 = tl(w0)
    gen = torch.Generator().manual_seed(a.seed)
    idx = torch.randperm(n, generator=gen)[:a.mlp_loo]
    t0, loo, gns, shifts = time.perf_counter(), [], [], []
    for i in idx.tolist():
        keep = torch.arange(n) != i
        wi, g = newton(w0, X[keep], Y[keep]); gns.append(g)
        loo.append(tl(wi) - q0); shifts.append(wi - w0)
    t_loo = time.perf_counter() - t0
    loo = torch.stack(loo, 1)                                                # (nt, |idx|)
    pm, am = S[:, idx].mean(0), loo.mean(0)                                  # the mean test loss
    per_pt = np.nanmean([spearman(S[j, idx], loo[j]) for j in range(nt)])
    t0 = time.perf_counter()
    Sn, i_nt = loo_scores(r, (Xt, Yt), idx, weight_decay=mu)                  # one Newton step per removed row
    t_nt = time.perf_counter() - t0
    pn, per_pt_n = Sn.mean(0), np.nanmean([spearman(Sn[j], loo[j]) for j in range(nt)])
    D_ = torch.stack(shifts, 1)                                              # re-trained w̄₋ᵢ − w̄ (p, |idx|)
    wdist = lambda P: torch.linalg.vector_norm(P - D_, dim=0)/torch.linalg.vector_norm(D_, dim=0)
    d1, dn = wdist(i_nt.first_order), wdist(i_nt.dw)
    t0, lds_pred, lds_act = time.perf_counter(), [], []
    for _ in range(a.lds):
        keep = torch.zeros(n, dtype=torch.bool); keep[torch.randperm(n, generator=gen)[:n//2]] = True
        wS, g = newton(w0, X[keep], Y[keep]); gns.append(g)
        lds_pred.append(S[:, ~keep].sum(1)); lds_act.append(tl(wS) - q0)
    t_lds = time.perf_counter() - t0
    P_, A_ = torch.stack(lds_pred, 1), torch.stack(lds_act, 1)              # (nt, subsets)
    lds = np.nanmean([spearman(P_[j], A_[j]) for j in range(nt)])
    lds_mean = spearman(P_.mean(0), A_.mean(0))
    print(f"\n### D. MNIST MLP 49-{hid}-10 (tanh, p = {r.p}, n = {n}, {nt} test images, weight decay μ = {mu:g}): LOO and LDS by warm-start Newton re-training\n")
    print(f"w̄ to ‖∇‖ = {gn:.1e} ({t_train:.0f} s); scores for {nt}×{n} pairs in one block solve: {t_s:.1f} s "
          f"({info.solve.hvps} HVP columns, {info.solve.status}); {len(idx)} LOO in {t_loo:.0f} s, {a.lds} half-subsets in "
          f"{t_lds:.0f} s; max final ‖∇‖ of all re-trainings {max(gns):.1e}\n")
    print("| metric | setsens influence_scores (H + μI, exact solve) | setsens loo_scores (one Newton step per removed row) |")
    print("|---|---|---|")
    print(f"| LOO, mean test loss: Pearson / Spearman over {len(idx)} removals | {pearson(pm, am):.4f} / {spearman(pm, am):.4f} | "
          f"{pearson(pn, am):.4f} / {spearman(pn, am):.4f} |")
    print(f"| LOO, per test point: Spearman over the removals, mean over {nt} test points | {per_pt:.4f} | {per_pt_n:.4f} |")
    far = i_nt.rho < 0.25                                                    # warned: the step left its quadratic model
    pmix = torch.where(far, S[:, idx], Sn).mean(0)
    print(f"| LOO, mean test loss, first order on the {int(far.sum())} rows `loo_scores` warned about (ρ < 1/4), "
          f"`loo_scores` on the rest: Pearson / Spearman | – | {pearson(pmix, am):.4f} / {spearman(pmix, am):.4f} |")
    print(f"| LDS, per test point (dattri's definition), {a.lds} random halves | {lds:.4f} | – |")
    print(f"| LDS, mean test loss, {a.lds} random halves | {lds_mean:.4f} | – |")
    print(f"\nloo_scores: {len(idx)} solves in {t_nt:.1f} s, at most {max(int(i_.iterations.max()) for i_ in i_nt.solves)} Lanczos "
          f"steps, normal residual ≤ {max(float(i_.normres.max()) for i_ in i_nt.solves):.1e}; rel. error of the mean-test-loss "
          f"change {float((pn - am).norm()/am.norm()):.3f} (first order {float((pm - am).norm()/am.norm()):.3f}); "
          f"‖predicted − re-trained shift‖/‖re-trained shift‖ over the removals, median / max: Newton step "
          f"{float(dn.median()):.3f} / {float(dn.max()):.3f}, first order {float(d1.median()):.3f} / {float(d1.max()):.3f}; "
          f"trust-region ratio ρ {float(i_nt.rho.min()):.3f} … {float(i_nt.rho.max()):.3f}, warned rows {idx[far].tolist()}, "
          f"ρ ≥ {float(i_nt.rho[~far].min()):.3f} on the others")


def part_e(a):
    from setsens.cifar import load_pretrained, cifar10
    from setsens.resnet_study import last_layer_audit
    t0 = time.time()
    X, Y = cifar10(n=a.audit_n, dtype=f64)
    A, risk = last_layer_audit(load_pretrained(dtype=f64), X, Y, k=a.audit_k, random_sets=5, t=1e-3, device=a.device)
    print(f"\n### E. Poisoning audit, ResNet-56 final layer (p = {risk.p}), {a.audit_n} CIFAR-10 images, k = {a.audit_k}, "
          f"{a.device}, {time.time() - t0:.0f} s\n")
    print(f"re-fitted layer: ‖∇R + μw̄‖ = {A.grad_norm:.1e}; moduli: largest "
          f"{[round(float(v), 4) for v in A.moduli.sort(descending=True).values[:5]]}, median {float(A.moduli.median()):.4f}\n")
    print(A._repr_markdown_())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=5000, help='training images (part B)')
    ap.add_argument('--ntest', type=int, default=500, help='test images (part B)')
    ap.add_argument('--loo', type=int, default=100, help='leave-one-out re-trainings (part B)')
    ap.add_argument('--l2', type=float, default=1e-3, help='L2 weight (part B)')
    ap.add_argument('--gtol', type=float, default=1e-10, help='gradient tolerance of all trainings (part B)')
    ap.add_argument('--parts', default='abc', help="which parts to run: any of 'a', 'b', 'c', 'd', 'e'")
    ap.add_argument('--audit-n', type=int, default=32, help='CIFAR-10 training images (part E)')
    ap.add_argument('--audit-k', type=int, default=3, help='images per poisoned set (part E)')
    ap.add_argument('--device', default='cpu', help='part E: cpu or cuda')
    ap.add_argument('--queries', type=int, default=500, help='test points scored one by one (part C)')
    ap.add_argument('--mlp-n', type=int, default=1000, help='training images (part D)')
    ap.add_argument('--mlp-ntest', type=int, default=100, help='test images (part D)')
    ap.add_argument('--hidden', type=int, default=16, help='hidden units (part D)')
    ap.add_argument('--mlp-loo', type=int, default=50, help='leave-one-out re-trainings (part D)')
    ap.add_argument('--lds', type=int, default=50, help='random 50 %% subsets re-trained (part D)')
    ap.add_argument('--lanczos-queries', type=int, default=32, help='of these, solved one Krylov space per query (part C)')
    ap.add_argument('--save', default='', help='write the part-B set-up and ground truth to this .pt file (for benchmarks/peers/)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if 'a' in a.parts: part_a(a)
    if 'b' in a.parts: part_b(a)
    if 'c' in a.parts: part_c(a)
    if 'd' in a.parts: part_d(a)
    if 'e' in a.parts: part_e(a)


if __name__ == '__main__':
    main()
