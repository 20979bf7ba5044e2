"""The LR plan: linear warmup then cosine decay, and what a resume with a new plan (more epochs, a new
LR, a warm restart) adds to it, without a jump.

A plan is a list of segments, each `{"start", "end", "kind", "from", "to"}`: from step `start` the
factor goes from `from` to `to` at step `end` ("linear" or "cosine") and is held after `end`; the
last segment that has started rules. Factors multiply the group's base LR (the LR the run started
with). One `Plan` per parameter group sits in a torch.optim.lr_scheduler.LambdaLR stepped per
optimizer step: a pure function of the step, and a callable object, so LambdaLR's own state_dict
saves its segments in every checkpoint and a resume of a resume continues the curve it was on.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from nbtools.config import TrainConfig

RESUME_RAMP_EPOCHS = 0.25  # a new LR on resume is reached over this, unless warmup_epochs changes too
# an LR less than 5 % of the way from its floor to its peak is at its floor: more epochs there train at
# the floor LR (a cosine is there for the last ~14 % of its steps)
NEAR_FLOOR = 0.05
# How floor_advice names the two ways on, as format strings: Python arguments by default; a CLI or a
# notebook passes its own, e.g. {"lr": "--lr {lr}", "restart": "--schedule restart"}
PYTHON_TERMS = {"lr": "lr={lr}", "group_lrs": "group_lrs={lrs}", "restart": 'schedule="restart"'}
PLAN_FIELDS = ("epochs", "lr", "group_lrs", "min_lr_factor", "warmup_epochs", "schedule")


def segment(start: int, end: int, kind: str, frm: float, to: float) -> dict:
    return {"start": int(start), "end": int(end), "kind": kind, "from": float(frm), "to": float(to)}


def factor_at(segments: list[dict], step: int) -> float:
    """The LR factor at optimizer step `step` (0-based)."""
    seg = segments[0]
    for s in segments:
        if s["start"] > step:
            break
        seg = s
    progress = min(1.0, max(0.0, (step - seg["start"]) / max(1, seg["end"] - seg["start"])))
    frm, to = seg["from"], seg["to"]
    if seg["kind"] == "linear":
        return frm + (to - frm) * progress
    return to + (frm - to) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(warmup_steps: int, total_steps: int, min_factor: float) -> list[dict]:
    """Linear from ~0 to 1 over `warmup_steps` ((step + 1) / (warmup_steps + 1)), then cosine from 1
    to `min_factor` at `total_steps`, held there if training runs longer."""
    warmup = [segment(-1, warmup_steps, "linear", 0.0, 1.0)] if warmup_steps > 0 else []
    return [*warmup, segment(warmup_steps, total_steps, "cosine", 1.0, min_factor)]


class Plan:
    """One parameter group's LR factor as a function of the step (see the module docstring)."""

    def __init__(self, segments: list[dict]):
        self.segments = list(segments)

    def __call__(self, step: int) -> float:
        return factor_at(self.segments, step)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_factor: float
) -> LambdaLR:
    plan = warmup_cosine(warmup_steps, total_steps, min_factor)
    return LambdaLR(optimizer, [Plan(plan) for _ in optimizer.param_groups])


# --- a resume with a new plan --------------------------------------------------------------------


def _lr(x: float) -> str:
    mantissa, exponent = f"{x:.2e}".split("e")  # 7.52e-4, 1e-5: LRs read best in one form
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _span(steps: int, steps_per_epoch: int) -> str:
    if steps % steps_per_epoch == 0:
        n = steps // steps_per_epoch
        return f"{n} epoch" + ("s" if n != 1 else "")
    return f"{steps} steps ({steps / steps_per_epoch:.2g} epochs)"


def _bend(
    plan: Plan,
    base: float,
    step: int,
    total: int,
    ramp: int,
    target: float | None,
    floor: float,
    spe: int,
    near_floor: float,
):
    """New segments for one group from `step` on, what they do in words, and whether they keep the LR
    at its floor (at most `near_floor`). target None: keep the LR where it is (finishing a ramp in
    progress) and decay from there to `floor` at `total`."""
    now, at_floor = plan(step), False
    current = next(s for s in reversed(plan.segments) if s["start"] <= step)
    if target is None and current["kind"] == "linear" and step < current["end"] < total:
        cut, new = current["end"], [segment(current["end"], total, "cosine", current["to"], floor)]
        said = (
            f"finishes its ramp to {_lr(base * current['to'])} at step {current['end']}, then decays to "
            f"{_lr(base * floor)} over {_span(total - current['end'], spe)}"
        )
    elif target is None:
        cut, new = step, [segment(step, total, "cosine", now, floor)]
        at_floor = now <= near_floor
        if at_floor and _lr(base * now) == _lr(base * floor):
            said = (
                f"stays at its floor, {_lr(base * now)}, for {_span(total - step, spe)}: the run had already "
                "decayed to it"
            )
        elif at_floor:
            said = (
                f"is near its floor already: {_lr(base * now)}, decaying to {_lr(base * floor)} over "
                f"{_span(total - step, spe)}"
            )
        else:
            said = (
                f"continues from {_lr(base * now)} and decays to {_lr(base * floor)} over "
                f"{_span(total - step, spe)}"
            )
    else:
        ramp = max(1, min(ramp, (total - step) // 2))  # leave steps to decay: the run ends at the floor
        cut = step
        new = [segment(step, step + ramp, "linear", now, target)]
        new.append(segment(step + ramp, total, "cosine", target, floor))
        said = (
            f"ramps from {_lr(base * now)} to {_lr(base * target)} over {ramp} step"
            + ("s" if ramp != 1 else "")
            + f", then decays to {_lr(base * floor)} over {_span(total - step - ramp, spe)}"
        )
    plan.segments = [s for s in plan.segments if s["start"] < cut] + new
    return new, said, at_floor


def floor_advice(cfg: TrainConfig, terms: dict[str, str] = PYTHON_TERMS) -> str:
    """What to do when more epochs would train at the floor LR, naming the two ways on in `terms`
    (PYTHON_TERMS: the arguments of fit and load_job). The example LR is half the configured one."""
    new_lr = terms["lr"].format(lr=_lr(cfg.lr / 2))
    if cfg.group_lrs:
        lrs = "{" + ", ".join(f"{k!r}: {_lr(v / 2)}" for k, v in cfg.group_lrs.items()) + "}"
        new_lr += ", " + terms["group_lrs"].format(lrs=lrs)
    peak = ", ".join(_lr(v) for v in [cfg.lr, *cfg.group_lrs.values()])
    return (
        f"to train them at a higher LR, stop and resume from the same checkpoint with a new LR (e.g. {new_lr}: "
        f"a short ramp up to it, then a cosine down to its floor) or with {terms['restart']} (a warmup to the "
        f"configured {peak} again, then a cosine down to its floor)"
    )


def resume_plan(
    scheduler: LambdaLR,
    saved: dict,
    old: TrainConfig,
    new: TrainConfig,
    step: int,
    steps_per_epoch: int,
    total: int | None = None,
    terms: dict[str, str] = PYTHON_TERMS,
) -> dict:
    """After `scheduler.load_state_dict(saved)` at optimizer step `step`: continue the recorded plan,
    or, when the resumed config changes it, bend it from the LR it is at (no jump, no new warmup):

    - more (or fewer) epochs, or a new min_lr_factor: the LR continues from where it is and decays to
      the floor (the group's LR x min_lr_factor) at the new last step;
    - a new LR for a group (`lr`, `group_lrs`): a linear ramp from the current LR to the new one over
      RESUME_RAMP_EPOCHS (or `warmup_epochs`, if the resume changes it), then cosine to the floor;
    - `schedule="restart"`: a warm restart, a ramp to the configured LR over `warmup_epochs` (one step
      if 0), then cosine to the floor.

    - a new batch_size or grad_accum (at an epoch boundary): the remaining epochs have another number
      of steps, so the run ends at `total` (not new.epochs x steps_per_epoch) and the LR continues
      from where it is and decays to the floor there.

    The new plan gives the current step the LR it already has: the change starts with the next step.
    Returns {"lr_plan": [one line per group], "lr_segments": {group: new segments}}, or {} when the
    plan is unchanged. When more epochs would only train at the floor LR (a finished run extended), the
    lines say so and a last one gives the ways on (`floor_advice`, in `terms`)."""
    spe, plans = steps_per_epoch, scheduler.lr_lambdas
    if not all(isinstance(d, dict) and "segments" in d for d in saved["lr_lambdas"]):
        # a checkpoint written before plans were recorded: its plan was the old config's curve
        legacy = warmup_cosine(round(old.warmup_epochs * spe), old.epochs * spe, old.min_lr_factor)
        for plan in plans:
            plan.segments = list(legacy)
    changed = {k for k in PLAN_FIELDS if getattr(old, k) != getattr(new, k)}
    if total is not None and total != new.epochs * spe:
        changed.add("steps_per_epoch")
    total = new.epochs * spe if total is None else total
    if not changed - {"warmup_epochs"} or step >= total:
        return {}
    groups = scheduler.optimizer.param_groups
    lines, segments, at_floor = [], {}, False
    for group, plan, base in zip(groups, plans, scheduler.base_lrs):
        name = group.get("name", "default")
        old_lr, new_lr = old.group_lrs.get(name, old.lr), new.group_lrs.get(name, new.lr)
        peak = new_lr / base
        floor = peak * new.min_lr_factor
        if new.schedule == "restart":
            ramp_epochs, target, how = new.warmup_epochs, peak, "restarts (schedule='restart'): "
        elif new_lr != old_lr:
            ramp_epochs = new.warmup_epochs if "warmup_epochs" in changed else RESUME_RAMP_EPOCHS
            target, how = peak, ""
        elif changed & {"epochs", "min_lr_factor", "steps_per_epoch"}:
            ramp_epochs, target, how = 0, None, ""
        else:
            continue
        ramp = round(ramp_epochs * spe)
        near = floor + NEAR_FLOOR * (peak - floor)
        new_segments, said, held = _bend(plan, base, step, total, ramp, target, floor, spe, near)
        at_floor = at_floor or held
        segments[name] = new_segments
        lines.append(("LR " if len(groups) == 1 else f"LR [{name}] ") + how + said)
    if at_floor:
        lines.append(floor_advice(new, terms))
    return {"lr_plan": lines, "lr_segments": segments} if lines else {}
