"""Progress of a sweep: one line per finished run, one bar for the whole sweep.

Runs finish in any order when several execute at once, so a sweep shows no
per-batch bars; instead each finished run prints one line,

    [3/8] relu_lr2_good_1000x60_seed0_mnist with_bn: val. 0.9521, test 0.9480, 4.1 s

and a bar below them counts the runs and estimates the time left. The
estimate weighs each run by its batches (a 50,000-batch run counts 25 times
a 2,000-batch one): elapsed time x batches left / batches done. On a
terminal the bar is redrawn in place; elsewhere (a log, a pipe) the bar's
text ends each run's line instead.

It must not know what a run trains.
"""

import sys
import time


def duration(seconds):
    """`42 s`, `3 min 05 s`, `2 h 07 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class SweepProgress:
    """Reports the runs of a sweep as they finish.

    Args:
        total: Number of runs to run in this call.
        batches: Total training batches of those runs (for the estimate).
        stream: Where to write; default `sys.stdout`.
        interval: Minimum seconds between two redraws of a live bar.
    """

    def __init__(self, total, batches, stream=None, interval=1.0):
        self.total = total
        self.batches = max(1, batches)
        self.stream = stream or sys.stdout
        self.interval = interval
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.finished = 0
        self.failed = 0
        self.batches_done = 0
        self.start = time.perf_counter()
        self._last_draw = -float("inf")
        self._drawn = False

    def run_finished(self, label, batches, text):
        """One line for a finished run: `[k/n] <label>: <text>`."""
        self.finished += 1
        self.batches_done += batches
        self._line(f"[{self.finished + self.failed}/{self.total}] {label}: {text}")

    def run_failed(self, label, batches, reason):
        """One line for a run that could not finish (it is not recorded)."""
        self.failed += 1
        self.batches_done += batches
        done = self.finished + self.failed
        self._line(f"[{done}/{self.total}] {label}: FAILED, {reason}")

    def tick(self):
        """Redraws a live bar (elapsed time) at most every `interval` seconds."""
        now = time.perf_counter()
        if self.live and now - self._last_draw >= self.interval:
            self._draw()

    def close(self):
        """Ends a live bar's line."""
        if self.live and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def bar(self):
        """`[######..........] 3/8 runs, 12 s, about 20 s left`."""
        done = self.finished + self.failed
        elapsed = time.perf_counter() - self.start
        width = 20
        filled = round(width * self.batches_done / self.batches)
        text = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} runs, "
        text += duration(elapsed)
        if 0 < self.batches_done < self.batches:
            left = elapsed * (self.batches - self.batches_done) / self.batches_done
            text += f", about {duration(left)} left"
        return text

    def _line(self, text):
        if self.live:
            self.stream.write("\r\033[K" + text + "\n")
            self._draw()
        else:
            self.stream.write(f"{text} | {self.bar()}\n")
            self.stream.flush()

    def _draw(self):
        self._last_draw = time.perf_counter()
        self.stream.write("\r\033[K" + self.bar())
        self.stream.flush()
        self._drawn = True
