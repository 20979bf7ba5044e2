"""The doctor's rules over per-term gradients (a MultiTaskLoss run): one loss term drowning the others on
the shared trunk, and two terms pulling it in opposite directions. Seed 002 blamed its K head for
"interfering"; these say which term, by how much, and what weight would balance it.

They read these fields of `run.steps` records (written by fit from nbtools.step.term_grads at one step of
each log interval; records without them are skipped):

    term_grad    {head: norm}   gradient norm of the *weighted* term (weight x loss) on the shared
                                parameters, at the interval's probed step (None: not finite)
    term_cos     {"a|b": cos}   cosine between the two terms' gradients there, for each pair in head order
                                (None where a norm is 0 or not finite)
    term_weight  {head: weight} the MultiTaskLoss weights when probed (a resume may change them)
    term_params  str            which parameters ("last: layer4.1.conv2 (1 tensors, 18432 values)")
    term_loss    {head: loss}   optional: the interval's mean *unweighted* loss of each head

- `loss-term-dominates`: in DOMINATE_INTERVALS = 2 consecutive probed intervals the same term's gradient is
  >= DOMINATE_FACTOR = 10 x every other term's (terms of weight 0 left out). A dominated head whose loss
  (term_loss) fell to DOMINATE_FITTED = 0.1 x its first recorded value has fitted, and is not drowned:
  such intervals do not count. The balancing weight brings the dominant term's gradient to the next
  largest one's: weight x (next / dominant), the median over the stretch. Open while the latest probed
  interval is still dominated; resolved at the first interval of the trailing stretch that is not.
- `loss-terms-conflict`: a pair's cosine < CONFLICT_COS = -0.3 in at least CONFLICT_SHARE = 80 % of
  CONFLICT_WINDOW = 10 consecutive probed intervals. One batch's cosine is noisy (the sane two-head run
  of the tests swings between -0.96 and +0.35): around a true 0 with sd 0.3, an interval is below -0.3
  with p = 0.16, so "3 in a row" happens 4e-3 of the time, in a long run somewhere, while 8 of 10 happens
  1.4e-5 of the time (4e-4 at sd 0.45); a real conflict keeps most of its intervals below. Open while the
  window ending at the latest probed interval still holds; resolved at the first whose window does not.
"""

from __future__ import annotations

import statistics

from nbtools.runs.findings import Finding, status_from

DOMINATE_FACTOR, DOMINATE_INTERVALS, DOMINATE_FITTED = 10.0, 2, 0.1
CONFLICT_COS, CONFLICT_WINDOW, CONFLICT_SHARE = -0.3, 10, 0.8


def _probed(run) -> list[dict]:
    return [r for r in run.steps if r.get("term_grad")]


def _first_losses(records: list[dict]) -> dict[str, float]:
    first: dict[str, float] = {}
    for r in records:
        for name, v in (r.get("term_loss") or {}).items():
            if v is not None and name not in first:
                first[name] = v
    return first


def _dominance(r: dict, first_loss: dict[str, float]) -> tuple[str, str, float] | None:
    """(dominant head, next largest head, dominant / next) when one term dominates in record r."""
    weights = r.get("term_weight") or {}
    norms = {n: g for n, g in r["term_grad"].items() if g is not None and weights.get(n, 1.0) > 0}
    if len(norms) < 2:
        return None
    ranked = sorted(norms, key=norms.get, reverse=True)
    loss = r.get("term_loss") or {}
    top = ranked[0]
    rest = [  # the others, but those that fitted: their gradient vanished because their loss did
        n for n in ranked[1:]
        if not (loss.get(n) is not None and first_loss.get(n) and loss[n] <= DOMINATE_FITTED * first_loss[n])
    ]  # fmt: skip
    if not rest or norms[top] < DOMINATE_FACTOR * norms[rest[0]]:
        return None
    return top, rest[0], norms[top] / norms[rest[0]] if norms[rest[0]] > 0 else float("inf")


def _stretches(records: list[dict], hit, length: int) -> list[list[dict]]:
    """Maximal runs of consecutive records with `hit(r)` true and the same value, at least `length` long."""
    out, current, key = [], [], None
    for r in records:
        k = hit(r)
        if k is not None and (not current or k == key):
            current.append(r)
        else:
            if len(current) >= length:
                out.append(current)
            current = [r] if k is not None else []
        key = k
    if len(current) >= length:
        out.append(current)
    return out


def loss_term_dominates(run) -> Finding | None:
    """`loss-term-dominates`: one term's gradient on the shared trunk >= DOMINATE_FACTOR x every other's
    in DOMINATE_INTERVALS consecutive probed intervals."""
    records = _probed(run)
    first = _first_losses(records)
    found = {id(r): _dominance(r, first) for r in records}
    hits = _stretches(
        records, lambda r: None if found[id(r)] is None else found[id(r)][0], DOMINATE_INTERVALS
    )
    if not hits:
        return None
    w = hits[0]
    top, nxt, _ = found[id(w[0])]
    ratios = [found[id(r)][2] for r in w]
    weights = w[-1].get("term_weight") or {}
    weight = weights.get(top)
    finite = [1 / x for x in ratios if x != float("inf")]
    balance = weight * statistics.median(finite) if weight is not None and finite else None
    first_step = w[0]["step"] - w[0]["steps"] + 1
    more = f"; {len(hits) - 1} later stretch(es) too" if len(hits) > 1 else ""
    said_weight = f" (weight {weight:.3g})" if weight is not None else ""
    finding = Finding(
        "loss-term-dominates",
        f"the gradient of loss term {top!r}{said_weight} on the shared parameters "
        f"({w[-1].get('term_params', 'shared trunk')}) is {statistics.median(ratios):.3g}x that of the next, "
        f"{nxt!r} (weight {weights.get(nxt, 1.0):.3g}), in {len(w)} consecutive intervals over steps "
        f"{first_step}-{w[-1]['step']}{more}: the other heads barely train the trunk",
        (
            f"set the weight of {top!r} to about {balance:.3g} (MultiTaskLoss({{..., {top!r}: (loss, {balance:.3g})}})"
            f"), which brings its gradient to that of {nxt!r}, or raise the other weights by as much; "
            if balance is not None
            else f"lower the weight of {top!r} or raise the others'; "
        )
        + "train regression heads on standardised targets (a loss in raw units can be 1e6 times another); "
        "nbt.overfit_batch(model, batch, loss) shows which head fits.",
        epoch=w[-1]["epoch"],
        step=w[-1]["step"],
    )
    return status_from(finding, records, lambda r: found[id(r)] is not None)


def _cosine(r: dict, pair: str) -> float | None:
    return (r.get("term_cos") or {}).get(pair)


def _conflicted(records: list[dict], pair: str) -> list[bool]:
    """For each record: the window of CONFLICT_WINDOW probed intervals ending there has a cosine below
    CONFLICT_COS in at least CONFLICT_SHARE of them (False before a full window)."""
    below = [(c := _cosine(r, pair)) is not None and c < CONFLICT_COS for r in records]
    need = CONFLICT_SHARE * CONFLICT_WINDOW
    return [
        i + 1 >= CONFLICT_WINDOW and sum(below[i + 1 - CONFLICT_WINDOW : i + 1]) >= need
        for i in range(len(below))
    ]


def loss_terms_conflict(run) -> Finding | None:
    """`loss-terms-conflict`: a pair's cosine < CONFLICT_COS in CONFLICT_SHARE of CONFLICT_WINDOW
    consecutive probed intervals."""
    records = _probed(run)
    pairs = list(dict.fromkeys(p for r in records for p in r.get("term_cos") or {}))
    hits = []  # (index of the record that ends the pair's first such window, pair, flags)
    for pair in pairs:
        flags = _conflicted(records, pair)
        if any(flags):
            hits.append((flags.index(True), pair, flags))
    if not hits:
        return None
    end, pair, flags = min(hits, key=lambda h: (h[0], pairs.index(h[1])))
    w = records[end + 1 - CONFLICT_WINDOW : end + 1]
    a, b = pair.split("|")
    cosines = [c for r in w if (c := _cosine(r, pair)) is not None]
    below = sum(c < CONFLICT_COS for c in cosines)
    first_step = w[0]["step"] - w[0]["steps"] + 1
    more = f"; {len(hits) - 1} other pair(s) too" if len(hits) > 1 else ""
    finding = Finding(
        "loss-terms-conflict",
        f"loss terms {a!r} and {b!r} pull the shared parameters ({w[-1].get('term_params', 'shared trunk')}) "
        f"in opposite directions: gradient cosine below {CONFLICT_COS:g} in {below} of {len(w)} consecutive "
        f"intervals over steps {first_step}-{w[-1]['step']} (median {statistics.median(cosines):.2f}){more}",
        f"what one head learns the other undoes: check that {a!r} and {b!r} targets agree (same samples, same "
        "order, same sign convention); give each head more layers of its own (split the trunk's last block); "
        "or lower the weight of the less important one. Projecting conflicting gradients (PCGrad) is the "
        "heavier remedy.",
        epoch=w[-1]["epoch"],
        step=w[-1]["step"],
    )
    held = {id(r): f for r, f in zip(records, flags)}
    return status_from(finding, records, lambda r: held[id(r)])
