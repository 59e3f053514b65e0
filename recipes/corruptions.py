"""Batch norm when the test data is corrupted: AdaBN, prediction-time batch
norm, Schneider et al.'s mixed statistics and Tent (issue 27).

Placeholder docstring: completed with the measured figures.
"""

from kbn_study.commands.corruptions import main

if __name__ == "__main__":
    main()
