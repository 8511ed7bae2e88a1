"""`Evaluation`: how well predicted classes match reference classes (accuracy, per-class
precision/recall/F1, confusion matrix), like Earth Engine's `errorMatrix`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = reference class, column = predicted class."""
    truth = np.asarray(truth, np.int64).ravel()
    predicted = np.asarray(predicted, np.int64).ravel()
    if truth.shape != predicted.shape:
        raise InputError(f"truth and predicted differ in length: {truth.size} vs {predicted.size}.")
    for what, a in (("truth", truth), ("predicted", predicted)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise InputError(f"{what} has class values outside 0..{n_classes - 1}: {np.unique(a).tolist()}.")
    return np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


@dataclass(frozen=True)
class Evaluation:
    """Agreement of predicted classes with reference classes over `n` pixels."""

    classes: list[str]
    confusion: np.ndarray  # rows: reference class, columns: predicted class

    @classmethod
    def from_classes(cls, classes: Sequence[str], truth, predicted) -> Evaluation:
        """An evaluation of `predicted` class indices against `truth` class indices."""
        return cls(list(classes), confusion_matrix(truth, predicted, len(classes)))

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        """Share of pixels whose predicted class is the reference class (EE's `accuracy()`)."""
        return float(np.trace(self.confusion) / self.n) if self.n else float("nan")

    @property
    def support(self) -> np.ndarray:
        """Reference pixels per class."""
        return self.confusion.sum(axis=1)

    @property
    def precision(self) -> np.ndarray:
        """Per class: of the pixels predicted as it, the share that are it (EE's consumer's accuracy)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / self.confusion.sum(axis=0)

    @property
    def recall(self) -> np.ndarray:
        """Per class: of its pixels, the share predicted as it (EE's producer's accuracy)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.confusion) / self.confusion.sum(axis=1)

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        with np.errstate(invalid="ignore", divide="ignore"):
            return 2 * p * r / (p + r)

    def to_dict(self) -> dict:
        """Plain numbers (JSON-ready); NaN (a class never predicted or never present) -> None."""

        def clean(a):
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "classes": list(self.classes),
            "precision": clean(self.precision),
            "recall": clean(self.recall),
            "f1": clean(self.f1),
            "support": [int(v) for v in self.support],
            "confusion": self.confusion.tolist(),
        }

    def __repr__(self) -> str:
        width = max(8, *(len(c) for c in self.classes))
        lines = [f"<Evaluation accuracy {self.accuracy:.3f} over {self.n} pixels>"]
        lines.append(f"{'class':<{width}}  precision  recall     f1  support")
        for i, c in enumerate(self.classes):
            p, r, f = self.precision[i], self.recall[i], self.f1[i]
            lines.append(f"{c:<{width}}  {p:9.3f}  {r:6.3f}  {f:5.3f}  {int(self.support[i]):7d}")
        return "\n".join(lines)

    def plot(self, ax=None, colors: Sequence[str] | None = None):
        """The confusion matrix as a small matplotlib heat map (rows: reference, columns: predicted)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(3.2, 3.0))
        k = len(self.classes)
        ax.imshow(self.confusion, cmap="Blues")
        for i in range(k):
            for j in range(k):
                v = int(self.confusion[i, j])
                dark = v > self.confusion.max() / 2
                ax.text(
                    j, i, str(v), ha="center", va="center", color="white" if dark else "black", fontsize=8
                )
        ax.set_xticks(range(k), self.classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), self.classes, fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("reference", fontsize=8)
        ax.set_title(f"accuracy {self.accuracy:.2f} (n={self.n})", fontsize=9)
        if colors:
            for tick, c in zip(ax.get_yticklabels(), colors):
                tick.set_color("#" + c.lstrip("#"))
        return ax
