"""The study's commands: one module per recipe, each with `main(argv=None)`.

Run them as `python recipes/<name>.py`, `python -m kbn_study.commands.<name>`
or the console scripts (`kbn-compare`, ...). Importing a command module is
cheap: it parses its arguments before it imports Keras.
"""
