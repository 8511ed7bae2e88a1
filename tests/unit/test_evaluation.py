"""Evaluation figures against ones computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ee_model_widgets.core.evaluation import Evaluation
from ee_model_widgets.core.uncertainty import uncertainty
from ee_model_widgets.errors import InputError


def test_confusion_precision_recall_f1_by_hand():
    truth = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 1, 0, 1, 1, 2, 0, 2, 1]
    ev = Evaluation.from_classes(["a", "b", "c"], truth, pred)
    # rows = reference, columns = predicted, counted by hand from the pairs above
    assert ev.confusion.tolist() == [[2, 1, 0], [0, 2, 0], [1, 1, 2]]
    assert ev.n == 9
    assert ev.accuracy == pytest.approx(6 / 9)
    np.testing.assert_allclose(ev.precision, [2 / 3, 2 / 4, 2 / 2])
    np.testing.assert_allclose(ev.recall, [2 / 3, 2 / 2, 2 / 4])
    np.testing.assert_allclose(ev.f1, [2 / 3, 2 * 0.5 * 1 / 1.5, 2 * 1 * 0.5 / 1.5])
    d = ev.to_dict()
    assert d["support"] == [3, 2, 4] and d["confusion"] == ev.confusion.tolist()
    assert "accuracy 0.667 over 9 pixels" in repr(ev)


def test_a_class_never_predicted_has_no_precision():
    ev = Evaluation.from_classes(["a", "b"], [0, 1], [0, 0])
    assert np.isnan(ev.precision[1]) and ev.to_dict()["precision"][1] is None


def test_bad_class_values():
    with pytest.raises(InputError, match="outside 0..1"):
        Evaluation.from_classes(["a", "b"], [0, 2], [0, 1])
    with pytest.raises(InputError, match="differ in length"):
        Evaluation.from_classes(["a", "b"], [0, 1], [0])


def test_uncertainty_by_hand():
    p = np.array([[1.0, 0.5, 1 / 3], [0.0, 0.5, 1 / 3], [0.0, 0.0, 1 / 3]])  # three pixels, three classes
    np.testing.assert_allclose(uncertainty(p, "entropy"), [0.0, np.log(2) / np.log(3), 1.0], atol=1e-6)
    np.testing.assert_allclose(uncertainty(p, "margin"), [0.0, 1.0, 1.0], atol=1e-6)
