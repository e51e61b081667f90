"""The metrics of the paper's tables, and ROC curves.

* **F2F** (frame by frame) and **Vid** (video) per-class accuracy of the deepfake
  detector — what the paper's Tables 1 and 2 call "precision": the share of a class's
  frames (F2F) or videos (Vid) given that class's verdict. A video's verdict is the
  majority vote of its frames: fake when more than half of them are called fake (a tie
  is real), as the paper defines Vid.
* **Balanced accuracy** of a binary decision: the mean of the per-class accuracies;
  on a balanced set (the paper's pairs of real and attacked faces) it is the accuracy.
* **ROC / AUC**: the exact empirical curve (ties in score form one point) and the
  trapezoidal area under it, equal to the Mann-Whitney probability that a positive
  scores above a negative (ties count half).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rate(flags: Sequence[bool]) -> float:
    """Share of True; NaN for an empty sequence."""
    return float(np.mean(flags)) if len(flags) else float("nan")


def majority_fake(called_fake: Sequence[bool]) -> bool:
    """The Vid verdict of one video: fake when more than 50% of its frames are called fake."""
    return sum(called_fake) * 2 > len(called_fake)


def video_rate(frames_by_video: dict[str, list[bool]], fake: bool) -> float:
    """Share of videos whose majority verdict is fake (``fake=True``) or real."""
    votes = [majority_fake(v) == fake for v in frames_by_video.values() if v]
    return rate(votes)


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Mean of the per-class accuracies of boolean ``predicted`` for 0/1 ``labels``."""
    predicted, labels = np.asarray(predicted, bool), np.asarray(labels)
    accs = [np.mean(predicted[labels == c] == bool(c)) for c in (0, 1) if np.any(labels == c)]
    return float(np.mean(accs)) if len(accs) == 2 else float("nan")


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` from (0, 0) to (1, 1), one point per distinct score (label 1 positive)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]) * np.nan
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; NaN when a class is missing."""
    fpr, tpr = roc_curve(scores, labels)
    if np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
