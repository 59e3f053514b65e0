"""Models: the study's networks (`networks`: the MLP pair and the conv net).

Built from kbn's layers and Keras's; nothing here trains or loads data.
"""
