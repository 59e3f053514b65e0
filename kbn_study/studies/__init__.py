"""The studies: one module (or package) per experiment the recipes reproduce.

`published` (the seed study's configurations and printed figures),
`experiment` (its with/without-batch-norm comparison), `inference_modes`,
`covariate_shift`, `small_batches`, `benchmark` and `distributed`. Each
trains through `kbn_study.training`; none parses arguments (the commands
do).

Nothing here is shared machinery: what two studies share lives in
`kbn_study.training`.
"""
