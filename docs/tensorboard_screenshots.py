"""The README's TensorBoard screenshots, taken from a real TensorBoard.

Trains the README's main comparison (`recipes/compare.py`, 2,000 batches)
and a quick grid (`recipes/seed_grid.py --fraction 0.1`: all 15
configurations at a tenth of their length, both networks), serves each
folder with `tensorboard --logdir` on a free local port, renders three
views in headless Chromium and writes them under docs/:

- `tensorboard_scalars.png`: `train/loss` and `validation/accuracy` of both
  networks of the comparison, overlaid on the global-batch axis;
- `tensorboard_hparams.png`: the grid's 30 trials in the HParams table;
- `tensorboard_batch_norm.png`: the first batch norm of the comparison's
  network with batch norm over time (moving mean and variance, gamma, beta,
  and the gaps between batch and moving statistics).

Run from the repository root (about 6 minutes on the 2-core development
machine, most of it the grid):

    python docs/tensorboard_screenshots.py
    python docs/tensorboard_screenshots.py --skip-training   # reuse the logs

Needs Chromium (Debian: `apt-get install chromium`). Every command it runs
is printed first. The charts are drawn as SVG (`forceSVG=true`): headless
Chromium has no WebGL here.
"""

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import matplotlib.image
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=20000",
]
COMPARE_RUN = "relu_lr0.01_good_2000x60_seed0_mnist-subset"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--logs",
        default=os.path.join("logs", "tensorboard_docs"),
        help="folder for the runs (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default="docs", help="folder of the PNG files (default: %(default)s)"
    )
    parser.add_argument(
        "--chromium", default="chromium", help="browser (default: %(default)s)"
    )
    parser.add_argument(
        "--skip-training", action="store_true", help="reuse the runs in --logs"
    )
    args = parser.parse_args(argv)
    compare_dir = os.path.join(args.logs, "compare")
    grid_dir = os.path.join(args.logs, "seed_grid")
    if not args.skip_training:
        python = [sys.executable]
        _run(python + ["recipes/compare.py", "--log-dir", compare_dir])
        _run(python + ["recipes/seed_grid.py", "--fraction", "0.1", "--out", grid_dir])

    with _tensorboard(compare_dir) as base:
        runs = [f"{COMPARE_RUN}/without_bn", f"{COMPARE_RUN}/with_bn"]
        _wait_for_points(base, "scalars", runs, "validation/accuracy", 40)
        _wait_for_points(
            base, "histograms", runs[1:], "batch_norm/batch_norm_1/moving_variance", 41
        )
        _screenshot(
            args.chromium,
            _time_series(base, "^(train|validation)/"),
            os.path.join(args.out, "tensorboard_scalars.png"),
            (1600, 620),
            _has_curves,
        )
        _screenshot(
            args.chromium,
            _time_series(base, "batch_norm/batch_norm_1/", runs="with_bn"),
            os.path.join(args.out, "tensorboard_batch_norm.png"),
            (1600, 1260),
            _has_curves,
        )
    with _tensorboard(grid_dir) as base:
        _wait_for_trials(base, 30)
        _screenshot(
            args.chromium,
            f"{base}/#hparams",
            os.path.join(args.out, "tensorboard_hparams.png"),
            (2100, 1000),
            _has_table,
        )


def _time_series(base, tags, runs=None):
    """The time-series dashboard: `tags` and `runs` filters (regular
    expressions), no smoothing, charts as SVG."""
    query = {"forceSVG": "true", "smoothing": "0", "tagFilter": tags}
    if runs:
        query["runFilter"] = runs
    return f"{base}/?{urllib.parse.urlencode(query)}#timeseries"


def _run(command):
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


class _tensorboard:
    """`tensorboard --logdir` on a free port, in a process group of its own."""

    def __init__(self, log_dir):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        script = os.path.join(os.path.dirname(sys.executable), "tensorboard")
        self.command = [script, "--logdir", log_dir, "--host", "127.0.0.1"]
        self.command += ["--port", str(self.port)]

    def __enter__(self):
        print("$", shlex.join(self.command), "&", flush=True)
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _poll(check, what, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError):
            pass  # not serving yet
        time.sleep(1)
    raise SystemExit(f"TensorBoard did not serve {what} within {timeout} s")


def _wait_for_points(base, plugin, runs, tag, count):
    """Until every run's `tag` has `count` points: the views draw them all."""

    def loaded():
        for run in runs:
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            if len(_get(f"{base}/data/plugin/{plugin}/{plugin}?{query}")) < count:
                return False
        return True

    _poll(loaded, f"{count} points of {tag}")


def _wait_for_trials(base, count):
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"allowedStatuses": statuses, "startIndex": 0, "sliceSize": 100}
    url = f"{base}/data/plugin/hparams/session_groups?request=" + urllib.parse.quote(
        json.dumps(request)
    )

    def loaded():
        groups = _get(url)["sessionGroups"]
        # Every trial with its metrics (at least the three always written).
        return len(groups) >= count and all(
            len(group["metricValues"]) >= 3 for group in groups
        )

    _poll(loaded, f"{count} trials with their metrics")


def _screenshot(chromium, url, path, size, drawn, attempts=6):
    """Renders `url` into `path` until `drawn(image)` says the view is there.

    Right after TensorBoard starts, the time-series cards sometimes render
    before their data arrives and stay empty in the screenshot; another
    attempt a little later draws them.
    """
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory(prefix="kbn-chromium-") as profile:
            command = [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                f"--screenshot={os.path.abspath(path)}",
                url,
            ]
            print("$", shlex.join(command), flush=True)
            subprocess.run(
                command,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
            )
        if drawn(matplotlib.image.imread(path)[..., :3]):
            return
        print(f"  (attempt {attempt}: the view was not drawn yet)", flush=True)
        time.sleep(10)
    raise SystemExit(f"TensorBoard's view was never drawn: {path}")


def _has_curves(image):
    """Pixels of the first run's colour (TensorBoard's cyan): lines drawn."""
    cyan = np.array([0x12, 0xB5, 0xCB]) / 255
    return (np.abs(image - cyan).sum(axis=-1) < 0.15).sum() > 500


def _has_table(image):
    """Dark text right of the filter pane: the table's rows are there."""
    table = image[150:, image.shape[1] // 4 :].mean(axis=-1)
    return (table < 0.4).mean() > 0.005


if __name__ == "__main__":
    main()
