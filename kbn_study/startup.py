"""Start-up of a process that runs the study: the backend, TensorFlow's noise.

Holds `start`, which a command calls after parsing its arguments and before
it imports Keras (and a worker process before its first task), and
`import_tensorflow`. It must not hold anything a command parses or trains,
and imports nothing of kbn_study: every layer of the study may call it.
"""

import contextlib
import os
import re
import sys
import tempfile

# Lines that TensorFlow's C++ runtime prints while it is imported, whatever
# TF_CPP_MIN_LOG_LEVEL says (absl logs before its logging is initialized).
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\])"
)


def start(default_backend):
    """Prepares the process for Keras; call after parsing, before importing it.

    Chooses the backend (`KERAS_BACKEND` wins when set). On the TensorFlow
    backend, where Keras imports TensorFlow, it keeps TensorFlow's start-up
    log lines off the terminal: its C++ runtime prints `I0000 ...` lines
    while it is imported whatever `TF_CPP_MIN_LOG_LEVEL` says, so it is
    imported here with those lines filtered out (any other line it prints
    is passed on). On JAX nothing imports TensorFlow (TensorBoard files are
    written without it), and neither does this.
    """
    os.environ.setdefault("KERAS_BACKEND", default_backend)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import_tensorflow()


def import_tensorflow():
    """Imports TensorFlow, its start-up log lines filtered out; returns it.

    For the study's code that needs TensorFlow whatever the backend
    (`tf.distribute`): call it instead of `import tensorflow`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        with _filtered_stderr():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


@contextlib.contextmanager
def _filtered_stderr():
    """Captures file descriptor 2, then replays all but the start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not _STARTUP_NOISE.match(line):
                    print(line, file=sys.stderr)
