"""Classification metrics from logits, with scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """(N,) or (N,1) logits -> (N,) sigmoid; (N,C) -> (N,C) softmax. Computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim == 1:
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow warnings
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def f1_optimal_threshold(targets: np.ndarray, score: np.ndarray) -> tuple[float, float] | None:
    """(threshold, F1) of the threshold that maximises F1 when `score >= threshold` predicts class 1,
    from scikit-learn's precision_recall_curve; None when the targets hold one class only, or a score
    is not finite (a model with NaN weights: there is no threshold to speak of)."""
    y = np.asarray(targets).astype(np.int64).reshape(-1)
    if len(np.unique(y)) < 2 or not np.isfinite(score).all():
        return None
    precision, recall, thresholds = precision_recall_curve(y, score)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    i = int(np.argmax(f1))
    return float(thresholds[i]), float(f1[i])


def classification_metrics(targets: np.ndarray, logits: np.ndarray, threshold: float = 0.5) -> dict:
    """accuracy, precision, recall, f1, auc, the predicted-positive rate and the confusion matrix.

    Binary when the model emits one logit or two classes: class 1 is positive and predicted when its
    probability >= `threshold` (kept as "threshold"); "opt_threshold" and "opt_f1" are the F1-optimal
    threshold on these samples and its F1 (None for more classes, or one class only). More classes: argmax, macro averages, one-vs-rest AUC. AUC is None
    when the targets hold a single class (it is undefined, not 0.5).
    """
    y = np.asarray(targets).astype(np.int64).reshape(-1)
    p = probabilities(logits)
    binary = p.ndim == 1 or p.shape[1] == 2
    if binary:
        score = p if p.ndim == 1 else p[:, 1]
        pred = (score >= threshold).astype(np.int64)
        avg, labels = "binary", [0, 1]
    else:
        score, pred = p, p.argmax(axis=1)
        avg, labels = "macro", list(range(p.shape[1]))
    try:
        # one class only: undefined (newer scikit-learn returns NaN with a warning instead of raising)
        if len(np.unique(y)) < 2:
            raise ValueError("one class")
        auc = float(roc_auc_score(y, score, multi_class="ovr", labels=labels if not binary else None))
    except ValueError:  # one class only in y, or a class missing for one-vs-rest
        auc = None
    opt = f1_optimal_threshold(y, score) if binary else None
    return {
        "acc": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, average=avg, labels=labels, zero_division=0)),
        "recall": float(recall_score(y, pred, average=avg, labels=labels, zero_division=0)),
        "f1": float(f1_score(y, pred, average=avg, labels=labels, zero_division=0)),
        "auc": auc,
        "pred_pos_rate": float((pred == 1).mean()) if binary else None,
        "pos_rate": float((y == 1).mean()) if binary else None,
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "threshold": float(threshold) if binary else None,
        "opt_threshold": opt[0] if opt else None,
        "opt_f1": opt[1] if opt else None,
    }
