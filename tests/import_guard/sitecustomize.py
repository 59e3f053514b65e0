"""Records every `import tensorflow` of a process and of its children.

Put this folder on `PYTHONPATH` with `KBN_TESTS_IMPORT_LOG` naming a file:
Python imports `sitecustomize` at start-up in every process that inherits
the environment (a recipe, its worker processes), and each appends to the
file one line per process that imports TensorFlow, with the stack that did
it. The import itself goes ahead: the test reads the file afterwards.
"""

import os
import sys
import traceback

_LOG = os.environ.get("KBN_TESTS_IMPORT_LOG")


class _Recorder:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" and _LOG:
            stack = "".join(traceback.format_stack(limit=12))
            with open(_LOG, "a") as log:
                log.write(f"process {os.getpid()} {sys.argv}:\n{stack}\n")
        return None  # the other finders import it


if _LOG:
    sys.meta_path.insert(0, _Recorder())
