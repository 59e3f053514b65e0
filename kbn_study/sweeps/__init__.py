"""Sweeps: where many independent runs execute.

`workers` is a pool of single-threaded worker processes; `executors` runs
tasks in this process, in workers or on Ray, behind one interface;
`progress` draws a sweep's progress line. Nothing here knows what a task
trains.
"""
