"""The study's batch size and validation sampling rule, which its runs follow.

Two constants of the published study that the training path uses to name
runs (`kbn_study.training.runs.run_name`) and the study's configurations
use to sample (`kbn_study.studies.published`). It must import nothing (the
commands read it before Keras is imported).
"""

# The study's batch size: 60 images.
STUDY_BATCH_SIZE = 60


def study_sampling_interval(batches):
    """The study's validation sampling interval: every 500 batches in runs of
    10,000 batches or more, every 50 in shorter ones."""
    return 500 if batches >= 10_000 else 50
