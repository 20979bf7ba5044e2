"""The per-term gradient panels (a MultiTaskLoss run): how hard each weighted loss term pulls on the shared
trunk, and the cosine between two terms' pulls, from the telemetry fields `term_grad` {head: norm} and
`term_cos` {"a|b": cosine} (nbtools.step.term_grads; one probe per log interval). The dashboard shows them
beside the other panels when a run records them; the doctor's loss-term-dominates (one term >= 10x the
others) and loss-terms-conflict (cosine < -0.3) read the same fields (nbtools.diagnose.term_rules)."""

from __future__ import annotations

from matplotlib.axes import Axes

from nbtools.viz.panels import _log_y, _positive, _xy

CONFLICT = -0.3  # the doctor's loss-terms-conflict cosine (nbtools.diagnose.term_rules)


def has_terms(steps: list[dict]) -> bool:
    return any(r.get("term_grad") for r in steps)


def _names(steps: list[dict], field: str) -> list[str]:
    return list(dict.fromkeys(k for r in steps for k in (r.get(field) or {})))


def term_grad_panel(ax: Axes, steps: list[dict]) -> None:
    """Each weighted term's gradient norm on the shared parameters, log scale: a line 10x above the
    others is a term drowning them (its weight is the knob)."""
    for i, name in enumerate(_names(steps, "term_grad")):
        ax.plot(*_positive(steps, lambda r, n=name: (r.get("term_grad") or {}).get(n)), "o-", ms=3,
                color=f"C{i}", label=name)  # fmt: skip
    if has_terms(steps):
        _log_y(ax)
        ax.legend(fontsize=7)
    where = next((r["term_params"] for r in reversed(steps) if r.get("term_params")), None)
    ax.set(xlabel="step", ylabel="|grad| of weight x loss", title="per-term gradient (shared)")
    if where:
        ax.text(0.01, 0.01, str(where)[:48], transform=ax.transAxes, fontsize=6, color="gray")


def term_cos_panel(ax: Axes, steps: list[dict]) -> None:
    """The cosine between each pair of terms' gradients; below the dotted line they pull apart."""
    for i, pair in enumerate(_names(steps, "term_cos")):
        ax.plot(*_xy(steps, lambda r, p=pair: (r.get("term_cos") or {}).get(p)), "o-", ms=3, color=f"C{i}",
                label=pair.replace("|", " vs "))  # fmt: skip
    ax.axhline(CONFLICT, ls=":", color="red", lw=1)
    ax.axhline(0.0, ls="-", color="gray", lw=0.5)
    ax.set(xlabel="step", ylabel="cosine", title="per-term gradient cosine", ylim=(-1.05, 1.05))
    if _names(steps, "term_cos"):
        ax.legend(fontsize=7)
