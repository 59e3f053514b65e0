"""The study's inference demonstration: batch versus population statistics.

A network trained with batch norm is tested twice: once normalizing with the
statistics of the test batch itself (`training=True`, what a model does if
inference is forgotten) and once with the population statistics learned in
training (`training=False`). On the whole test set at once both work, since
10,000 images have about the population's statistics. Fed one image at a
time, batch statistics fail: an image's mean is itself and its variance 0, so
every normalized value is 0, every hidden unit outputs the same value
(`beta`), and every image gets the same prediction.

It must not train (the command trains through
`kbn_study.studies.experiment`).
"""

import dataclasses
import warnings

import numpy as np

from kbn.evaluation import Accuracy
from kbn.evaluation import compiled_forward

EXPLANATION = (
    "With batch statistics, a single image is normalized by its own mean and "
    "variance, so every normalized value is 0 and the network sees the same "
    "input whatever the image: it predicts one class for all of them. "
    "Population statistics, estimated during training, normalize each image "
    "as the training batches were normalized, so single predictions are as "
    "good as batch ones."
)


@dataclasses.dataclass
class InferenceModesResult:
    """Accuracies and single-image predictions under both modes."""

    test_accuracy_batch_statistics: float
    test_accuracy_population_statistics: float
    single_accuracy_batch_statistics: float
    single_accuracy_population_statistics: float
    single_predictions_batch_statistics: list
    single_predictions_population_statistics: list
    single_labels: list

    def summary(self):
        return {
            "test_accuracy_batch_statistics": self.test_accuracy_batch_statistics,
            "test_accuracy_population_statistics": (
                self.test_accuracy_population_statistics
            ),
            "single_accuracy_batch_statistics": self.single_accuracy_batch_statistics,
            "single_accuracy_population_statistics": (
                self.single_accuracy_population_statistics
            ),
            "distinct_single_predictions_batch_statistics": len(
                set(self.single_predictions_batch_statistics)
            ),
        }


def compare_inference_modes(model, images, labels, single_examples=200):
    """Tests `model` with batch and with population statistics.

    Args:
        model: A trained model with batch norm, returning logits.
        images, labels: The test set (integer labels).
        single_examples: How many of the first test images to feed one at a
            time.

    Returns:
        `(result, warned)`: an `InferenceModesResult`, and how many batch
        norm layers warned that a training batch had one value per feature
        (what the demonstration is about: their warnings are collected here
        rather than printed with source lines).
    """
    labels = np.asarray(labels)
    singles = images[:single_examples]
    single_labels = labels[:single_examples]
    result = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mode, training in (("batch", True), ("population", False)):
            whole = Accuracy(model, images, labels, training=training)()
            forward = compiled_forward(model, training=training)
            predicted = [
                int(np.argmax(np.asarray(forward(image[None]))[0])) for image in singles
            ]
            result[mode] = (whole, predicted)
    warned = 0
    for warning in caught:
        if "one value per feature" in str(warning.message):
            warned += 1
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    result = InferenceModesResult(
        test_accuracy_batch_statistics=result["batch"][0],
        test_accuracy_population_statistics=result["population"][0],
        single_accuracy_batch_statistics=_accuracy(result["batch"][1], single_labels),
        single_accuracy_population_statistics=_accuracy(
            result["population"][1], single_labels
        ),
        single_predictions_batch_statistics=result["batch"][1],
        single_predictions_population_statistics=result["population"][1],
        single_labels=[int(v) for v in single_labels],
    )
    return result, warned


def table(result, single_examples):
    """The accuracies under both modes, and the single predictions, as text."""
    lines = [
        "                      whole test set   one image at a time",
        f"batch statistics      {result.test_accuracy_batch_statistics:.4f}"
        f"           {result.single_accuracy_batch_statistics:.4f}",
        f"population statistics {result.test_accuracy_population_statistics:.4f}"
        f"           {result.single_accuracy_population_statistics:.4f}",
        "",
        f"{single_examples} single predictions with batch statistics:",
        str(result.single_predictions_batch_statistics),
        f"{single_examples} single predictions with population statistics:",
        str(result.single_predictions_population_statistics),
    ]
    return "\n".join(lines)


def _accuracy(predicted, labels):
    return float(np.mean(np.asarray(predicted) == np.asarray(labels)))
