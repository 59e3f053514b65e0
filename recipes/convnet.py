"""A deep conv net with and without batch norm per feature map.

The study ends by noting that convolutions need one mean and variance per
feature map, over batch, height and width. Its follow-up notebook trained a
20-layer conv net (19 convolutions and a dense layer) on MNIST with Adam at
0.002, batches of 64, for 800 batches: without batch norm about 0.11
accuracy (it does not learn), with batch norm about 0.97. Both variants here
start from the same kernels and see the same batches.

    python recipes/convnet.py                  # 800 batches (README: time, figures)
    python recipes/convnet.py --depth 10 --batches 400

Writes `logs/convnet_<depth>_<batches>_seed<seed>/` like `compare.py`:
results, curves, plot, TensorBoard logs.
"""

from kbn_study.commands.convnet import main

if __name__ == "__main__":
    main()
