"""kbn_study: the Ioffe & Szegedy MNIST study, built on the kbn library.

The library (`kbn`) is batch normalization for Keras; this package is the
study that uses it: MNIST loading (`kbn_study.mnist`), the study's networks
(`kbn_study.networks`), its configurations and published figures
(`kbn_study.published`), the one path that trains and tests a network
(`kbn_study.runs`, `kbn_study.comparison`), the experiment, the resumable
grid, plots, the inference-mode demonstration, the benchmark, and the
command-line entry points (`kbn_study.commands`), which the scripts in
`recipes/` call.

Importing this package is cheap (no Keras): the commands parse their
arguments before they import Keras, TensorFlow or JAX.
"""
