"""Training: the one path every run of the study goes through.

`runs` trains, records and tests one network (`train`, with a `NetworkRun`
and a `Schedule`); `comparison` runs several networks side by side and
writes their results files; `sampling` holds the study's batch size and
sampling rule. Nothing here is specific to one study or parses arguments.
"""
