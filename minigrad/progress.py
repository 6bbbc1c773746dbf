"""The Keras 3 progress bar, one line per epoch:

    469/469 ━━━━━━━━━━━━━━━━━━━━ 2s 4ms/step - accuracy: 0.9251 - loss: 0.2563

verbose=1 on a terminal redraws one line with carriage returns (ETA while
running, total time and time per step at the end); when the stream is not a
terminal (a log file, a pipe) only the final line is written, so logs stay small.
verbose=2 writes one line at the end, Keras 3's terse form
``469/469 - 2s - 4ms/step - accuracy: 0.9251 - loss: 0.2563``. verbose=0 writes nothing.

>>> import io
>>> out = io.StringIO()
>>> bar = Progbar(2, verbose=2, stream=out)
>>> bar.update(1, {"loss": 0.5}); bar.update(2, {"loss": 0.25}, finalize=True)
>>> out.getvalue().startswith("2/2 - ")
True
"""
import math
import re
import sys
import time

WIDTH = 20
_CHAR = "━"
_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def format_value(value):
    """Keras: 4 decimals, or scientific notation for tiny magnitudes."""
    value = float(value)
    return f"{value:.4f}" if abs(value) > 1e-3 or value == 0.0 else f"{value:.4e}"


def format_time_per_step(seconds, unit="step"):
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.0f}s/{unit}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/{unit}"
    return f"{seconds * 1e6:.0f}us/{unit}"


def _format_eta(seconds):
    if seconds > 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds > 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progbar:
    """Progress of one pass over ``target`` steps, written to ``stream`` (stdout by default).

    ``update(current, values)`` takes the step count done so far and a dict of
    already-averaged values to show; redraws are throttled to one per ``interval``
    seconds, so a fast loop pays nothing for them.
    """

    def __init__(self, target, verbose=1, stream=None, interval=0.05, unit="step"):
        self.target, self.verbose, self.unit = int(target), verbose, unit
        self.stream = sys.stdout if stream is None else stream
        self.dynamic = verbose == 1 and _is_tty(self.stream)
        self.interval = interval
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_len = 0
        self._done = False

    def update(self, current, values=None, finalize=None):
        """Show progress; ``finalize`` (default: current >= target) ends the line."""
        if self.verbose == 0 or self._done:
            return
        now = time.perf_counter()
        if finalize is None:
            finalize = current >= self.target
        if not finalize and (not self.dynamic or now - self._last_draw < self.interval):
            return
        self._last_draw = now
        line = self._line(current, values or {}, now, finalize)
        if self.dynamic:
            # Redraw in place; pad to wipe a longer previous line.
            visible = len(_ESCAPE.sub("", line))
            pad = max(self._last_len - visible, 0)
            self.stream.write("\r" + line + " " * pad + ("\n" if finalize else ""))
            self._last_len = visible
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._done = finalize

    def close(self):
        """End a redrawn line that was interrupted (so the next output starts on a new line)."""
        if self.dynamic and not self._done and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
        self._done = True

    def _line(self, current, values, now, finalize):
        elapsed = now - self.start
        per_step = elapsed / current if current else 0.0
        digits = int(math.log10(max(self.target, 1))) + 1
        count = f"{current:{digits}d}/{self.target}"
        metrics = "".join(f" - {k}: {format_value(v)}" for k, v in values.items())
        if self.verbose == 2:
            return f"{count} - {elapsed:.0f}s - {format_time_per_step(per_step, self.unit)}{metrics}"
        done = int(WIDTH * current / self.target) if self.target else WIDTH
        if self.dynamic:  # Keras' colours: bold count, green done, grey to do
            bar = (f"\x1b[1m{count}\x1b[0m " + (f"\x1b[32m{_CHAR * done}\x1b[0m" if done else "")
                   + f"\x1b[37m{_CHAR * (WIDTH - done)}\x1b[0m")
        else:
            bar = f"{count} {_CHAR * done}{' ' * (WIDTH - done)}"
        if finalize:
            timing = f" {elapsed:.0f}s {format_time_per_step(per_step, self.unit)}"
        else:
            timing = f" {_format_eta(per_step * (self.target - current))}"
        return bar + timing + metrics
