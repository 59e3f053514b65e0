"""Outputs: what runs leave for people to look at.

`plots` draws the learning curves and the grid's overview (matplotlib);
`hparams` writes the runs as trials of TensorBoard's HParams dashboard.
Nothing here trains.
"""
