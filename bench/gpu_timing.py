"""GPU timing with CUDA events: warm-up, then the median of many runs within a time budget."""

from __future__ import annotations

import statistics
import time


def median_ms(fn, *, stream_events, warmup=3, runs=100, min_runs=5, budget_s=4.0):
    """Median milliseconds of ``fn()`` measured by a pair of CUDA events around each call.

    ``stream_events`` creates an event that records on the stream ``fn`` queues
    its work on (:class:`CupyEvent` or ``torch.cuda.Event(enable_timing=True)``). Each run
    waits for its end event, so a run measures one call's latency from the GPU's
    view, including any time the GPU waits for the host to queue work. Stops
    after ``runs`` runs, or once ``budget_s`` seconds have passed and at least
    ``min_runs`` were taken. Returns ``(median_ms, samples_ms)``.
    """
    for _ in range(warmup):
        fn()
    _synchronize(stream_events)
    samples = []
    started = time.perf_counter()
    while len(samples) < runs:
        start, end = stream_events(), stream_events()
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(_elapsed_ms(start, end))
        if len(samples) >= min_runs and time.perf_counter() - started > budget_s:
            break
    return statistics.median(samples), samples


def _elapsed_ms(start, end):
    return float(start.elapsed_time(end))


def _synchronize(stream_events):
    event = stream_events()
    event.record()
    event.synchronize()


class CupyEvent:
    """A ``cupy.cuda.Event`` recorded on CuPy's *current* stream (``Event.record()`` alone
    would use the null stream), with torch's ``elapsed_time`` interface."""

    def __init__(self):
        import cupy

        self._cupy = cupy
        self.event = cupy.cuda.Event()

    def record(self):
        self.event.record(self._cupy.cuda.get_current_stream())

    def synchronize(self):
        self.event.synchronize()

    def elapsed_time(self, end):
        return self._cupy.cuda.get_elapsed_time(self.event, end.event)


def cupy_events():
    return CupyEvent()


def torch_events():
    import torch

    return torch.cuda.Event(enable_timing=True)
