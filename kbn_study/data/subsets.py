"""Datasets restricted to some of their classes, relabelled 0..k-1.

For transfer between halves of a dataset: a network pretrained on digits 0-4
and fine-tuned on digits 5-9 sees each half as a 5-class problem.

It must not hold anything about models or training.
"""

import dataclasses

import numpy as np

from kbn import checks
from kbn_study.data.mnist import Split


def with_classes(dataset, classes):
    """`dataset` (a `kbn_study.data.mnist.Dataset`) with only the examples
    of `classes`, in every split, their labels renumbered by their place in
    `classes` (`with_classes(d, [5, 6, 7, 8, 9])` labels a 7 as 2). The
    examples keep their order; `tag` gains `-classes<...>`.
    """
    classes = [int(c) for c in classes]
    present = set(np.unique(dataset.train.labels).tolist())
    if not classes or len(set(classes)) < len(classes) or not set(classes) <= present:
        checks.fail("classes", classes, f"distinct classes among {sorted(present)}")
    lookup = np.full(max(present) + 1, -1, dtype="int64")
    lookup[classes] = np.arange(len(classes))

    def keep(split):
        mask = np.isin(split.labels, classes)
        return Split(split.images[mask], lookup[split.labels[mask]])

    return dataclasses.replace(
        dataset,
        train=keep(dataset.train),
        validation=keep(dataset.validation),
        test=keep(dataset.test),
        tag=f"{dataset.tag}-classes{''.join(map(str, classes))}",
    )
