"""kbn_study: the Ioffe & Szegedy MNIST study and the papers around it, on kbn.

The library (`kbn`) is batch normalization for Keras; this package is the
study that uses it. A run flows through its folders in this order:

- `startup.py`: a process's start-up (the backend, TensorFlow's noise);
- `data/`: MNIST and Fashion-MNIST, split as the study split them, offline;
- `models/`: the study's networks (the MLP pair, the conv net);
- `outputs/`: plots and TensorBoard's HParams trials;
- `training/`: the one path that trains, records, tests and writes a
  network (`training.runs.train`), and networks side by side
  (`training.comparison`);
- `sweeps/`: where independent runs execute (this process, worker
  processes, Ray);
- `studies/`: one module per experiment (the seed study, inference modes,
  covariate shift, small batches, the benchmark, data parallelism);
- `grid/`: the published configurations x seeds, resumable;
- `cli.py` and `commands/`: the command lines that `recipes/*.py` run.

Each layer imports only itself and the layers above it in this list
(tests/test_layout.py checks it). Importing this package is cheap (no Keras): the
commands parse their arguments before they import Keras, TensorFlow or JAX.
"""


def install_hint(extra):
    """How to install kbn with `extra` ("study", "ray"): from a checkout or
    from a wheel built from it (the name `kbn` on PyPI belongs to another
    project: installing `kbn` from the index would install that one)."""
    return (
        f'pip install -e ".[{extra}]" in a checkout of kbn, or pip install '
        f'"dist/kbn-<version>-py3-none-any.whl[{extra}]" with a wheel built '
        "from it (README, Setup)"
    )
