"""The torch RBF SVM scores as scikit-learn's SVC does, in both of its score modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from ser.errors import SerError
from ser.training.baselines import fit_classic
from ser.training.models import build_model, resolve_hparams


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 30)
    x = rng.normal(size=(120, 5)) + y[:, None] * 0.8
    return x, y


def test_votes_are_svc_decision_function_and_confidence_its_summed_pairs() -> None:
    x, y = _data()
    ref = SVC(C=3.0, kernel="rbf", gamma="scale").fit(x, y)
    ovr, ovo = ref.decision_function(x), SVC(C=3.0, gamma="scale", decision_function_shape="ovo").fit(x, y)
    conf, p = np.zeros((len(x), 4)), 0
    pairs = ovo.decision_function(x)
    for i in range(4):
        for j in range(i + 1, 4):
            conf[:, i] += pairs[:, p]
            conf[:, j] -= pairs[:, p]
            p += 1
    xt = torch.from_numpy(x).float()
    votes, _ = fit_classic("svm", x, y, 4, resolve_hparams("svm", {"C": 3.0}), seed=0)
    graded, hp = fit_classic("svm", x, y, 4, resolve_hparams("svm", {"C": 3.0, "scores": "confidence",
                                                                     "temperature": 2.0}), seed=0)
    assert hp["scores"] == "confidence" and hp["temperature"] == 2.0  # kept, so a checkpoint rebuilds it
    np.testing.assert_allclose(votes(xt).detach().numpy(), ovr, atol=1e-4)
    np.testing.assert_allclose(graded(xt).detach().numpy(), conf / 2.0, atol=1e-4)
    assert not np.allclose(conf / 2.0, ovr, atol=0.1)  # the two modes do score differently
    rebuilt = build_model("svm", input_shape=(5,), n_classes=4, hparams=hp, mean=torch.zeros(5), std=torch.ones(5))
    rebuilt.body.load_state_dict(graded.state_dict())  # what a checkpoint's hparams and buffers rebuild
    np.testing.assert_allclose(rebuilt(xt).detach().numpy(), conf / 2.0, atol=1e-4)


def test_unknown_scores_are_refused_by_name() -> None:
    with pytest.raises(SerError, match="svm scores must be one of votes, confidence"):
        resolve_hparams("svm", {"scores": "platt"})
    with pytest.raises(SerError, match="svm temperature must be positive"):
        resolve_hparams("svm", {"temperature": "0"})
