"""Data: MNIST and Fashion-MNIST as the study splits them, read offline.

`files` reads the formats with NumPy alone (before Keras is imported);
`mnist` finds the data (a file, Keras's cache, Keras's download, Debian's
Fashion-MNIST, the 5,000 digits shipped in `resources/`) and splits it.
Nothing here builds or trains a model.
"""
