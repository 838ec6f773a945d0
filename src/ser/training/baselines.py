"""Classic baselines fitted by scikit-learn and shipped as torch modules.

``svm`` (RBF SVC) and ``logreg`` (multinomial logistic regression) are fitted on the
standardised descriptors of the training rows, then their learned numbers are copied into small
torch modules. The checkpoint therefore holds tensors only (loadable with ``weights_only=True``),
and evaluate and predict treat a baseline exactly like a CNN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class LinearScores(nn.Module):
    """``x @ W.T + b``: a fitted linear classifier's scores, ``(batch, D) -> (batch, classes)``."""

    def __init__(self, input_length: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_length, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


SVM_SCORES = ("votes", "confidence")


def svm_scores(v: Any) -> str:
    """``v`` as one of :data:`SVM_SCORES`; ValueError otherwise."""
    if str(v) not in SVM_SCORES:
        raise ValueError(f"svm scores must be one of {', '.join(SVM_SCORES)}, got {v!r}")
    return str(v)


def svm_temperature(v: Any) -> float:
    """``v`` as a positive temperature; ValueError otherwise."""
    try:
        t = float(v)
    except (TypeError, ValueError):
        t = float("nan")
    if not t > 0:
        raise ValueError(f"svm temperature must be positive, got {v!r}")
    return t


class RBFSVMScores(nn.Module):
    """A fitted one-vs-one RBF SVC, scoring ``(batch, classes)`` in one of two ways.

    ``scores="votes"`` is ``SVC.decision_function`` (ovr shape): each class's pairwise wins, ties
    broken by its bounded summed confidence; its softmax is near-constant (about 0.64 for the
    winner), a rank more than a probability. ``scores="confidence"`` is each class's summed
    pairwise decision values over ``temperature``: graded scores whose softmax a late fusion can
    weigh against a network's.

    Buffers hold the support vectors ``(n_sv, D)``, dual coefficients ``(classes - 1, n_sv)``,
    intercepts ``(pairs,)`` and per-class support counts; sizes come from the state dict.
    """

    def __init__(self, input_length: int, n_classes: int, *, n_sv: int = 1, gamma: float = 1.0,
                 scores: str = "votes", temperature: float = 1.0, **_: Any) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.gamma = float(gamma)
        self.scores, self.temperature = svm_scores(scores), svm_temperature(temperature)
        pairs = n_classes * (n_classes - 1) // 2
        self.register_buffer("support_vectors", torch.zeros(n_sv, input_length))
        self.register_buffer("dual_coef", torch.zeros(max(n_classes - 1, 1), n_sv))
        self.register_buffer("intercept", torch.zeros(pairs))
        self.register_buffer("n_support", torch.zeros(n_classes, dtype=torch.long))

    @classmethod
    def from_hparams(cls, input_length: int, n_classes: int, hp: dict[str, Any]) -> "RBFSVMScores":
        """The empty module that a fitted SVM's hyper-parameters (sizes included) describe."""
        return cls(input_length, n_classes, n_sv=int(hp.get("n_sv", 1)), gamma=float(hp.get("gamma_value", 1.0)),
                   scores=str(hp.get("scores", "votes")), temperature=float(hp.get("temperature", 1.0)))

    def ovo(self, x: torch.Tensor) -> torch.Tensor:
        """One-vs-one decision values ``(batch, pairs)``: positive favours the first class."""
        x = x.float()
        sv = self.support_vectors
        d2 = (x * x).sum(1, keepdim=True) - 2 * x @ sv.T + (sv * sv).sum(1)[None, :]
        k = torch.exp(-self.gamma * d2.clamp_min(0))
        starts = torch.cat([torch.zeros(1, dtype=torch.long, device=x.device), self.n_support.cumsum(0)])
        out = []
        for i in range(self.n_classes):
            for j in range(i + 1, self.n_classes):
                si, sj = slice(int(starts[i]), int(starts[i + 1])), slice(int(starts[j]), int(starts[j + 1]))
                out.append(k[:, si] @ self.dual_coef[j - 1, si] + k[:, sj] @ self.dual_coef[i, sj])
        return torch.stack(out, 1) + self.intercept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.ovo(x)
        votes = torch.zeros(x.shape[0], self.n_classes, device=x.device)
        conf = torch.zeros_like(votes)
        p = 0
        for i in range(self.n_classes):
            for j in range(i + 1, self.n_classes):
                conf[:, i] += dec[:, p]
                conf[:, j] -= dec[:, p]
                votes[:, i] += (dec[:, p] > 0).float()
                votes[:, j] += (dec[:, p] <= 0).float()
                p += 1
        if self.scores == "confidence":
            return conf / self.temperature
        # scikit-learn's ovr aggregation: votes, ties broken by bounded summed confidence
        return votes + conf / (3 * (conf.abs() + 1))


def fit_classic(name: str, x: np.ndarray, y: np.ndarray, n_classes: int, hparams: dict[str, Any],
                seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """Fit ``svm`` or ``logreg`` on standardised ``x (n, D)``; return the torch module and the
    hyper-parameters that rebuild it (sizes included)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    present = np.unique(y)
    if present.shape[0] < 2:
        raise ValueError("a classifier needs at least two classes in the training rows")
    if name == "logreg":
        clf = LogisticRegression(C=float(hparams["C"]), max_iter=int(hparams.get("max_iter", 2000)),
                                 class_weight="balanced" if hparams.get("balanced") else None, random_state=seed)
        clf.fit(x, y)
        module = LinearScores(x.shape[1], n_classes)
        w = np.full((n_classes, x.shape[1]), 0.0, dtype=np.float32)
        b = np.full(n_classes, -1e4, dtype=np.float32)  # a class absent from training is never predicted
        coef = clf.coef_ if present.shape[0] > 2 else np.vstack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
        icpt = clf.intercept_ if present.shape[0] > 2 else np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
        w[present], b[present] = coef, icpt
        with torch.no_grad():
            module.linear.weight.copy_(torch.from_numpy(w))
            module.linear.bias.copy_(torch.from_numpy(b))
        return module, dict(hparams)
    if name == "svm":
        if present.shape[0] != n_classes:
            raise ValueError("svm needs every class in the training rows")
        gamma = hparams.get("gamma", "scale")
        clf = SVC(C=float(hparams["C"]), kernel="rbf", gamma=gamma if gamma == "scale" else float(gamma),
                  class_weight="balanced" if hparams.get("balanced") else None, random_state=seed)
        clf.fit(x, y)
        hp = dict(hparams, n_sv=int(clf.support_vectors_.shape[0]), gamma_value=float(clf._gamma))
        module = RBFSVMScores.from_hparams(x.shape[1], n_classes, hp)
        with torch.no_grad():
            module.support_vectors.copy_(torch.from_numpy(clf.support_vectors_).float())
            module.dual_coef.copy_(torch.from_numpy(clf.dual_coef_).float())
            module.intercept.copy_(torch.from_numpy(clf.intercept_).float())
            module.n_support.copy_(torch.from_numpy(clf.n_support_.astype(np.int64)))
        return module, hp
    raise ValueError(f"unknown classic model {name!r}")
