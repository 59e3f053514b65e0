"""Progress of a sweep: one line per finished run, one bar for the whole sweep.

Runs finish in any order when several execute at once, so a sweep shows no
per-batch bars; instead each finished run prints one line,

    [3/8] relu_lr2_good_1000x60_seed0_mnist with_bn: val. 0.9521, test 0.9480, 4.1 s

and a bar below them counts the runs and estimates the time left from
measured work only: each finished run's own training time (not the
sweep's start-up: worker processes, imports, data), fitted as a fixed cost
plus a cost per batch once runs of two lengths have finished, so that a
short run's compilation does not stand for a long run's batches. Until
then, it estimates only remaining runs of a length already measured, and
otherwise says nothing. The estimate divides by the runs that execute at
once. On a terminal the bar is redrawn in place; elsewhere (a log, a pipe)
the bar's text ends each run's line instead.

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
        batches: Total training batches of those runs (the bar's length).
        stream: Where to write; default `sys.stdout`.
        interval: Minimum seconds between two redraws of a live bar.
        lengths: The batches of each run, for the estimate of the time left
            (None: no estimate).
        parallel: How many runs execute at once.
    """

    def __init__(
        self, total, batches, stream=None, interval=1.0, lengths=None, parallel=1
    ):
        self.total = total
        self.batches = max(1, batches)
        self.stream = stream or sys.stdout
        self.interval = interval
        self.parallel = max(1, int(parallel))
        self.remaining = None if lengths is None else sorted(lengths)
        self.measured = []  # (batches, seconds) of finished runs
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.finished = 0
        self.failed = 0
        self.batches_done = 0
        self.start = time.perf_counter()
        self._last_draw = -float("inf")
        self._drawn = False

    def run_finished(self, label, batches, text, seconds=None):
        """One line for a finished run: `[k/n] <label>: <text>`; `seconds`
        is the run's own training time (for the estimate)."""
        self.finished += 1
        self._done(batches)
        if seconds is not None:
            self.measured.append((batches, float(seconds)))
        self._line(f"[{self.finished + self.failed}/{self.total}] {label}: {text}")

    def run_failed(self, label, batches, reason):
        """One line for a run that could not finish (it is not recorded)."""
        self.failed += 1
        self._done(batches)
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
        left = self.seconds_left()
        if left is not None:
            text += f", about {duration(left)} left"
        return text

    def seconds_left(self):
        """The estimate of the time left, or None when the finished runs do
        not tell it (see the module's docstring)."""
        if not self.remaining or not self.measured:
            return None
        lengths = {b for b, _ in self.measured}
        if len(lengths) >= 2:
            fixed, per_batch = _fit(self.measured)
            work = sum(fixed + per_batch * b for b in self.remaining)
        elif set(self.remaining) <= lengths:
            work = len(self.remaining) * (
                sum(t for _, t in self.measured) / len(self.measured)
            )
        else:
            return None
        return work / min(self.parallel, len(self.remaining))

    def _done(self, batches):
        self.batches_done += batches
        if self.remaining and batches in self.remaining:
            self.remaining.remove(batches)

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


def _fit(measured):
    """`(fixed, per_batch)` seconds, least squares of `t = fixed + per_batch
    * b` over `(b, t)` pairs, neither negative."""
    count = len(measured)
    mean_b = sum(b for b, _ in measured) / count
    mean_t = sum(t for _, t in measured) / count
    spread = sum((b - mean_b) ** 2 for b, _ in measured)
    per_batch = sum((b - mean_b) * (t - mean_t) for b, t in measured) / spread
    if per_batch < 0:
        return mean_t, 0.0
    fixed = mean_t - per_batch * mean_b
    if fixed < 0:
        return 0.0, sum(t for _, t in measured) / sum(b for b, _ in measured)
    return fixed, per_batch
