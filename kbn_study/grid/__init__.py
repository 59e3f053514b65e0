"""The grid: the published study's 15 configurations x seeds, resumable.

`runner` plans and runs it on a sweep's executor, recording each run as it
finishes; `files` holds its CSV files (append, repair, resume); `summary`
and `report` make its tables and overview; `timing` runs it on two worker
counts side by side.

Nothing here trains a network itself: the runs go through
`kbn_study.training`.
"""
