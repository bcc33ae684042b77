"""Lab `momentum`: gradient descent on an ill-conditioned quadratic, f(w) = ½ (λ₁ w₁² + λ₂ w₂²) with λ₁ = 0.05 and
λ₂ = 40 (condition number 800), the course's figure from Goh's "Why momentum really works": with step size
α = 0.02, plain descent (β = 0) crawls along the shallow direction, momentum β = 0.99 converges far faster, and
stays stable for step sizes about twice as large (α < 2(1 + β)/λ₂ instead of α < 2/λ₂). The optimizer is
``torch.optim.SGD``, the one methodo's ``train.optimizer: {name: sgd, momentum: ...}`` builds."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

LAMBDAS = (0.05, 40.0)
ALPHA, BETAS = 0.02, (0.0, 0.99)
STEPS, TOL = 5000, 0.01  # iterations; "converged" when ‖w‖ ≤ TOL × ‖w₀‖ (the minimum is w = 0)
SWEEP = np.geomspace(0.02, 0.2, 41)  # step sizes tried for stability (6 % apart)
SWEEP_STEPS = 300


def _descend(w0: np.ndarray, alpha: float, beta: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The iterates and the loss of ``torch.optim.SGD(lr=alpha, momentum=beta)`` on the quadratic (float64)."""
    import torch

    lam = torch.tensor(LAMBDAS, dtype=torch.float64)
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=alpha, momentum=beta)
    path, loss = [w.detach().clone().numpy()], []
    for _ in range(steps):
        opt.zero_grad()
        f = 0.5 * (lam * w * w).sum()
        loss.append(f.item())
        if not np.isfinite(loss[-1]) or loss[-1] > 1e12:
            break  # diverged: no need to go on to inf
        f.backward()
        opt.step()
        path.append(w.detach().clone().numpy())
    return np.array(path), np.array(loss)


@step
def start_point(ctx: LabContext):
    """**The problem.** The quadratic's two curvatures differ 800-fold: the gradient is steep along w₂ and
    almost flat along w₁. The start point w₀ is drawn by the seed on a circle of radius 2, away from the axes."""
    rng = np.random.default_rng(ctx.seed)
    angle = rng.uniform(np.deg2rad(20), np.deg2rad(70)) + rng.integers(4) * np.pi / 2
    w0 = 2.0 * np.array([np.cos(angle), np.sin(angle)])
    ctx.state["w0"] = w0
    f0 = 0.5 * float(np.dot(LAMBDAS, w0 * w0))
    return ctx.record(lambdas=list(LAMBDAS), condition_number=LAMBDAS[1] / LAMBDAS[0], w0=w0.tolist(), f0=f0,
                      alpha=ALPHA)


@step
def descend(ctx: LabContext):
    """**Descend with α = 0.02, β = 0 and β = 0.99.** 5000 steps of `torch.optim.SGD` each; we count the steps
    until the distance to the minimum falls below 0.01 × its start (the loss is no guide here: it is dominated
    by the steep direction, which both runs settle in a few steps). Theory: plain descent shrinks the shallow direction by
    1 − αλ₁ = 0.999 per step; with momentum every direction shrinks by about √β = 0.995 per step."""
    out = {}
    for beta in BETAS:
        path, loss = _descend(ctx.state["w0"], ALPHA, beta, STEPS)
        ctx.state[f"path_{beta}"], ctx.state[f"loss_{beta}"] = path, loss
        dist = np.linalg.norm(path, axis=1)
        ctx.state[f"dist_{beta}"] = dist
        below = np.flatnonzero(dist <= TOL * dist[0])
        out[f"beta_{beta:g}"] = {"steps_to_tol": int(below[0]) if len(below) else None, "final_loss": float(loss[-1])}
    return ctx.record(tolerance=TOL, steps=STEPS, descent=out)


@step
def stability(ctx: LabContext):
    """**Which step sizes are stable?** For 41 step sizes from 0.02 to 0.2, 300 steps from w₀ with each β:
    stable when the loss ends below where it started. Theory: α < 2/λ₂ = 0.05 without momentum,
    α < 2(1 + β)/λ₂ = 0.0995 with β = 0.99."""
    out = {}
    for beta in BETAS:
        final = []
        for a in SWEEP:
            _, loss = _descend(ctx.state["w0"], float(a), beta, SWEEP_STEPS)
            final.append(float(loss[-1]) if len(loss) == SWEEP_STEPS and np.isfinite(loss[-1]) else float("inf"))
        final = np.array(final)
        ctx.state[f"sweep_{beta}"] = final
        ok = SWEEP[final < 0.5 * float(np.dot(LAMBDAS, ctx.state["w0"] ** 2))]  # ended below f(w₀)
        out[f"beta_{beta:g}"] = {"largest_stable_alpha": float(ok.max()) if len(ok) else None,
                                 "theory": 2 * (1 + beta) / LAMBDAS[1]}
    return ctx.record(stable_step_sizes=out)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the first 400 iterates of each run on the loss's contours (momentum overshoots and
    spirals in; plain descent crawls). Middle: the distance to the minimum against the step. Right: the loss after 300 steps
    against the step size (a curve ends where the run diverges)."""
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.6))
    r = 2.3
    g = np.linspace(-r, r, 200)
    W1, W2 = np.meshgrid(g, g)
    a.contour(W1, W2, 0.5 * (LAMBDAS[0] * W1 ** 2 + LAMBDAS[1] * W2 ** 2), levels=np.geomspace(1e-3, 100, 14),
              colors="0.8", linewidths=0.6)
    for beta, color in zip(BETAS, ("#cc6677", "#4477aa")):
        p = ctx.state[f"path_{beta}"][:400]
        a.plot(p[:, 0], p[:, 1], "-", lw=0.8, c=color, label=f"β = {beta:g}")
        b.semilogy(ctx.state[f"dist_{beta}"], c=color, label=f"β = {beta:g}")
        s = ctx.state[f"sweep_{beta}"]
        c.loglog(SWEEP[np.isfinite(s)], s[np.isfinite(s)], "o-", ms=3, c=color, label=f"β = {beta:g}")
        c.axvline(2 * (1 + beta) / LAMBDAS[1], c=color, ls=":", lw=1)
    a.plot(*ctx.state["w0"], "k*", ms=9)
    a.set_xlim(-r, r)
    a.set_ylim(-r, r)
    a.set_title(f"paths, α = {ALPHA}")
    a.legend(fontsize=8)
    b.axhline(TOL * np.linalg.norm(ctx.state["w0"]), c="k", ls=":", lw=1)
    b.set_xlabel("step")
    b.set_ylabel("distance to the minimum ‖w‖")
    b.set_title("convergence")
    b.legend(fontsize=8)
    c.set_xlabel("step size α")
    c.set_ylabel(f"f after {SWEEP_STEPS} steps")
    c.set_title("stability (dotted: theory)")
    c.legend(fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "momentum")


def conclude(ctx: LabContext):
    n = ctx.numbers
    d0, d1 = n["descent"]["beta_0"], n["descent"]["beta_0.99"]
    s0, s1 = n["stable_step_sizes"]["beta_0"], n["stable_step_sizes"]["beta_0.99"]
    checks = {
        "momentum reaches the tolerance": d1["steps_to_tol"] is not None,
        "momentum needs under half the steps of plain descent": d1["steps_to_tol"] is not None and (
            d0["steps_to_tol"] is None or d1["steps_to_tol"] < d0["steps_to_tol"] / 2),
        "momentum is stable at step sizes ≥ 1.5× those of plain descent":
            (s1["largest_stable_alpha"] or 0) >= 1.5 * (s0["largest_stable_alpha"] or float("inf")),
        "measured stability limits within 10 % of theory": all(
            s["largest_stable_alpha"] is not None and abs(s["largest_stable_alpha"] / s["theory"] - 1) < 0.1
            for s in (s0, s1)),
    }
    steps0 = f"{d0['steps_to_tol']} steps" if d0["steps_to_tol"] is not None else f"more than {STEPS} steps"
    sentence = (f"With α = {ALPHA}, momentum 0.99 brings w within {TOL:g} × ‖w₀‖ of the minimum in {d1['steps_to_tol']} "
                f"steps where plain descent needs {steps0}, and stays stable up to α = "
                f"{s1['largest_stable_alpha']:.3g} vs {s0['largest_stable_alpha']:.3g} (theory "
                f"{s1['theory']:.3g} vs {s0['theory']:.3g}).")
    return sentence, checks


LAB = Lab("momentum", "Momentum on an ill-conditioned quadratic",
          "On an ill-conditioned quadratic with step size 0.02, momentum β = 0.99 converges much faster than plain "
          "gradient descent and is stable for step sizes about twice as large.",
          (start_point, descend, stability, plot), conclude,
          intro="The course's figure from Gabriel Goh's \"Why momentum really works\" (Distill, 2017): momentum "
                "lets descent build speed along shallow directions while damping the steep ones.")
