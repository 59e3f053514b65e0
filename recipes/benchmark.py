"""Training speed of the study's MLP: kbn vs Keras's layer vs a hand-written loop.

Measures, in one run on one machine and the same data, for each installed
backend (TensorFlow, JAX), training steps per second (batches of 60) of:

- the kbn path (`kbn_study.training.runs`: `MultiStepTrainer` + `model.fit`, with the
  validation recorder sampling the whole validation set every 500 batches),
  with and without batch norm, and without the recorder;
- the same path with `keras.layers.BatchNormalization` in place of kbn's;
- plain `model.fit` with `steps_per_execution=50`, what a Keras user writes;
- a hand-written loop with every step inside one compiled loop: the ceiling;
- inference of the BN model and of its folded copy (`kbn.fold_batch_norm`);
- the training step of an LSTM and of a BN-LSTM (`kbn.layers.BNLSTM`, 100
  units, batches of 64) on 784-step pixel sequences, and their ratio
  (`--suite lstm` runs these alone).

Each measurement is repeated `--repeats` times, interleaved, and the median
is reported with the ratios the project aims at. The backend of this
process (`KERAS_BACKEND`, JAX by default) is measured here, every other one
in a process of its own (Keras picks its backend once per process).

    python recipes/benchmark.py           # several minutes (README, Performance)
    python recipes/benchmark.py --batches 2000 --repeats 1 --backends jax
    python recipes/benchmark.py --suite lstm --repeats 3   # BN-LSTM / LSTM

Writes `<out>/benchmark.csv` (every repeat), `<out>/benchmark.md` (medians
and ratios). Timings are not tests: a shared machine is noisy; compare the
ratios of one run.
"""

from kbn_study.commands.benchmark import main

if __name__ == "__main__":
    main()
