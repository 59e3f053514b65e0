"""kbn's batch norm in a network built with Keras's, on MNIST.

A network built with `keras.layers.BatchNormalization` (`NETWORKS`: a small
ResNet of 8 batch norms, or `keras.applications.MobileNetV2` with 52 in a
nested backbone, from `kbn_study.models.networks`) is built for every
variant after the same seed, so every variant starts from the same weights,
and then converted by `kbn.convert_batch_norm` (weights and moving
statistics carried over):

- `keras_bn`: Keras's layer, as `keras.applications` builds it;
- `kbn_bn`: kbn's `BatchNorm` with Keras's configuration (the same maths:
  the same curve, up to float32 rounding);
- `kbn_ghost`: ghost batches (`virtual_batch_size`, Hoffer et al. 2017);
- `kbn_renorm`: batch renormalization (`renorm=True`, Ioffe 2017), with
  the paper's final clip limits r in [1/3, 3], d in [-5, 5];
- `kbn_population`: `momentum=None`, the population statistics of Ioffe &
  Szegedy (2015): the moving statistics are the average over every batch
  seen, where Keras's momentum of 0.99 (MobileNetV2's: 0.999) keeps
  0.99^n of the initial (0, 1) after n batches.

Every variant trains on the same batches through the study's one training
path (`kbn_study.training.comparison`). This module holds the variants and
their builders, nothing that trains; it imports Keras only in `build`, so
that a command can read `VARIANTS` before it starts Keras.
"""

import functools

RENORM_CLIPPING = {"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0}
NETWORKS = ("resnet", "mobilenet_v2")
VARIANTS = ("keras_bn", "kbn_bn", "kbn_ghost", "kbn_renorm", "kbn_population")


def conversion_options(variant, ghost_batch_size):
    """`kbn.convert_batch_norm`'s options of `variant`; None: no conversion."""
    return {
        "keras_bn": None,
        "kbn_bn": {},
        "kbn_ghost": {"virtual_batch_size": ghost_batch_size},
        # The paper's limits after its schedule (Keras's default clips
        # nothing: r and d then undo the batch statistics entirely).
        "kbn_renorm": {"renorm": True, "renorm_clipping": RENORM_CLIPPING},
        "kbn_population": {"momentum": None},
    }[variant]


def build(variant, network="resnet", ghost_batch_size=16):
    """A new `network` classifier with `variant`'s batch norms."""
    import kbn
    from kbn_study.models import networks

    if network == "resnet":
        model = networks.build_resnet(name=variant)
    else:
        model = networks.build_mobilenet_v2(name=variant)
    options = conversion_options(variant, ghost_batch_size)
    if options is None:
        return model
    return kbn.convert_batch_norm(model, **options)


def builders(variants=VARIANTS, network="resnet", ghost_batch_size=16):
    """`{variant: build function}` for `compare_networks` (they pickle)."""
    return {
        variant: functools.partial(
            build, variant, network=network, ghost_batch_size=ghost_batch_size
        )
        for variant in variants
    }
