"""Sequential MNIST: an LSTM against a batch-normalized LSTM (Cooijmans 2016).

Each image is read as a sequence: by default its 28 rows (28 steps of 28
pixels), which runs on a CPU; `--pixels` reads it pixel by pixel (784 steps
of 1) and `--permuted` in a fixed random pixel order, the paper's tasks.
Both networks have the same size and start from the same kernels; the
BN-LSTM normalizes the input and recurrent terms and the cell state with
statistics per time step (`kbn.layers.BNLSTM`, a compiled loop). After
training, the BN-LSTM's statistics are recomputed on training batches and
the gap to its moving statistics is printed, with each network's time per
batch, the batches 15 minutes buy, and the paper's accuracy for the task.

    python recipes/sequential_mnist.py                   # rows, 1,000 batches
    python recipes/sequential_mnist.py --pixels --permuted       # 200 batches
    python recipes/sequential_mnist.py --pixels --permuted --units 100 \
        --batches 600 --batches-per-sample 50 --seed 1

The paper's pixel-by-pixel results (full MNIST, long training): LSTM 98.9%,
BN-LSTM 99.0%; permuted: 90.2% and 95.4%. Writes
`logs/sequential_<order>_<batches>_seed<seed>/` like `compare.py`.
"""

from kbn_study.commands.sequential_mnist import main

if __name__ == "__main__":
    main()
