"""The small-batch study's pieces: non-i.i.d. batches and the renorm schedule."""

import keras
import numpy as np
import pytest

from kbn_study.models import networks
from kbn_study.studies import small_batches


def test_class_batches_draw_a_few_classes_in_equal_shares():
    labels = np.repeat(np.arange(10), 37)
    blocks = small_batches.class_batches(labels, 60, 3, 4, seed=0)
    seen = np.zeros(len(labels), int)
    for _ in range(30):
        indices, block_labels = next(blocks)
        assert indices.shape == (4, 60) and indices.dtype == np.int32
        np.testing.assert_array_equal(block_labels, labels[indices])
        for batch in indices:
            classes, counts = np.unique(labels[batch], return_counts=True)
            assert len(classes) == 3 and (counts == 20).all()
            assert len(set(batch)) == 60  # no example twice in a batch
            seen[batch] += 1
    # 30 blocks x 4 batches x 60 = 7,200 draws of 370 examples: each class's
    # examples are cycled through, so every example was used.
    assert seen.min() > 0


@pytest.mark.parametrize(
    "classes,message", [(7, "a divisor of the batch size 60"), (11, "an int in")]
)
def test_class_batches_refuse_what_they_cannot_draw(classes, message):
    with pytest.raises(ValueError, match=message):
        next(
            small_batches.class_batches(np.repeat(np.arange(10), 30), 60, classes, 1, 0)
        )


def test_renorm_schedule_is_the_papers_scaled_with_rmin_the_reciprocal():
    schedule = small_batches.renorm_schedule(2_000)
    # The paper's 5,000 / 25,000 / 40,000 of 50,000 steps: 200, 1,000, 1,600.
    assert schedule.values(200) == (1.0, 0.0)
    assert schedule.values(1_000) == pytest.approx((1 + 2 * 800 / 1_400, 5.0))
    assert schedule.values(1_600) == (3.0, 5.0)
    # A run of 20 batches: rmax reaches 3 at batch 16.
    schedule = small_batches.renorm_schedule(20)
    model = networks.build_mlp(
        networks.initial_weights((8, 4, 3), seed=0),
        batch_norm=small_batches.normalization_factory("renorm", "micro2"),
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(1_200, 8)).astype("float32")
    y = np.zeros(1_200, int)
    model.fit(x, y, batch_size=60, epochs=1, verbose=0, callbacks=[schedule])
    layer = model.get_layer("batch_norm_1")
    assert float(keras.ops.convert_to_numpy(layer.renorm_rmax)) == 3.0
    assert float(keras.ops.convert_to_numpy(layer.renorm_rmin)) == pytest.approx(1 / 3)
    assert layer.virtual_batch_size == 2
