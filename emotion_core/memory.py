"""Peak memory of a block of work: allocated GPU memory on a GPU; on the CPU, the CPU tensor storage the block
allocated, counted from PyTorch's profiler memory events.

What ``PeakMemory.peak_mib`` is:

- On a GPU: ``torch.cuda.max_memory_allocated`` during the block, i.e. the peak of everything allocated on the
  device, the model's weights included.
- On the CPU: the largest total size, at any moment of the block, of the CPU tensor storage that the block
  allocated (on the thread that entered it) and had not yet freed. For a training run that is what training adds on
  top of the model: activations and what autograd saves for the backward pass, gradients, the optimizer's state
  (made at its first step), the batches, temporaries inside operators that allocate through PyTorch's CPU allocator,
  and the evaluations inside the block with their logits. It leaves out what existed at
  entry (the model's weights and buffers, which a run reports as ``weights_mib``; the head variant's cached
  features; the data), never subtracts the freeing of such memory, and leaves out memory that is not tensor storage
  (Python objects, Arrow tables, library caches, the malloc arena's slack). The same definition holds for every
  variant; for the head on cached features the frozen base ran before the block (once per process), so the figure
  is the head's training alone: small (0.15 MiB on a 256-wide test model) but not 0.

  The count is exact (bytes asked of the allocator, not pages), so the same run gives the same figure wherever it
  runs in a process: first, after a bigger run or after a smaller one. The RSS cannot do that: a study's worker runs
  trials one after another, the allocator keeps what earlier ones freed, and a process's first run pays one-time
  costs, so the RSS growth of identical LoRA runs ranges from 0 to 100 MiB (see tests/test_memory.py). Its cost on
  a CPU: about 7% more CPU time on a SmolLM2-135M LoRA run, 17% on a 256-wide test model (whose operators are so small
  that each allocation counts).

  ``peak_mib`` is None, with the reason in ``note``, where the count cannot be made: another profiler is already
  running on the thread (a ``PeakMemory`` inside another one, or ``torch.profiler``), the build has no Kineto, or
  the profiler's private API (``torch._C._autograd._enable_profiler``, ``experimental_event_tree``)
  failed.

``peak_rss_mib`` is the absolute peak RSS, sampled by a thread: it is not a figure of one run, but it shows a leak
from one run to the next.
"""

from __future__ import annotations

import os
import threading
import time

import psutil
import torch

MIB = 1024 * 1024


class TensorPeak:
    """The peak of live CPU tensor bytes allocated on this thread between ``start`` and ``stop``.

    It runs the Kineto profiler with ``profile_memory`` and no operator recording (only a scope that eager code never
    enters), and keeps its own table of the pointers allocated since ``start``: the profiler's running total also moves
    when a tensor made before is freed at an address it saw in an earlier session. The profiler keeps every event until
    it stops, so after an optimizer step at least ``rotate_s`` after the last restart the session is counted and
    started again; a long run thus keeps only about a second of events. Tensors alive across a restart stay in the
    table, and the profiler reports their freeing in the next session.
    """

    def __init__(self, rotate_s: float = 1.0):
        self.rotate_s = rotate_s
        self.peak_bytes = 0
        self.events = 0
        self.restarts = 0
        self._live: dict[int, int] = {}
        self._now = 0
        self._thread = threading.get_ident()
        self._hook = None
        self._since = 0.0

    def start(self) -> str | None:
        """Start counting; or say why it cannot (and count nothing)."""
        if not torch.autograd.kineto_available():
            return "this PyTorch build has no Kineto profiler to count CPU tensor memory with"
        if torch.autograd._profiler_enabled():
            return ("another profiler was running (a PeakMemory inside another one, or torch.profiler): "
                    "CPU tensor memory is counted by the outer one only")
        # Kineto prints a line to stderr at each start and stop (its STAGE and USDT levels); it reads this once.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        from torch.optim.optimizer import register_optimizer_step_post_hook

        try:
            self._enable()
        except Exception as error:  # RuntimeError from the profiler; others where a PyTorch release moved its private API
            return f"the profiler could not start: {error!r}"
        self._hook = register_optimizer_step_post_hook(self._after_step)
        return None

    def stop(self, count: bool = True) -> None:
        """Stop counting; with ``count=False`` (the block raised) the events are dropped unread."""
        if self._hook is not None:
            self._hook.remove()
        self._collect(count)

    def _enable(self) -> None:
        from torch._C._autograd import _enable_profiler, _prepare_profiler
        from torch._C._profiler import ProfilerActivity, ProfilerConfig, ProfilerState, RecordScope, _ExperimentalConfig

        config = ProfilerConfig(ProfilerState.KINETO, False, True, False, False, False, _ExperimentalConfig())
        _prepare_profiler(config, {ProfilerActivity.CPU})
        _enable_profiler(config, {ProfilerActivity.CPU}, {RecordScope.LITE_INTERPRETER})
        self._since = time.monotonic()

    def _collect(self, count: bool) -> None:
        from torch._C._autograd import _disable_profiler

        result = _disable_profiler()
        if count:
            self._count(result.experimental_event_tree())

    def _after_step(self, optimizer, args, kwargs) -> None:
        if threading.get_ident() == self._thread and time.monotonic() - self._since >= self.rotate_s:
            self._collect(True)
            self._enable()
            self.restarts += 1

    def _count(self, roots) -> None:
        from torch._C._profiler import _ExtraFields_Allocation

        events = []

        def walk(nodes) -> None:
            # In time order: the roots are, and an operator's children are (without operator events, which this
            # scope leaves out, all the allocations are roots). Only the CPU allocator reports here: the run is on
            # the CPU (use_cpu) and CUDA is absent.
            for event in nodes:
                fields = event.extra_fields
                if type(fields) is _ExtraFields_Allocation:
                    events.append((fields.ptr, fields.alloc_size))
                elif event.children:
                    walk(event.children)

        walk(roots)
        live, now, peak = self._live, self._now, self.peak_bytes
        for ptr, size in events:
            if size > 0:
                live[ptr] = size
                now += size
                if now > peak:
                    peak = now
            else:
                now -= live.pop(ptr, 0)  # a tensor made before the block: its freeing is not counted
        self._now, self.peak_bytes = now, peak
        self.events += len(events)


class PeakMemory:
    """Context manager that measures the peak memory of its block (see the module's docstring for what it counts).

    ``peak_mib`` (None on the CPU when it cannot be counted, with the reason in ``note``), ``peak_rss_mib`` (the
    process's peak RSS during the block, sampled every ``interval_s``).
    """

    def __init__(self, interval_s: float = 0.02):
        self.gpu = torch.cuda.is_available()
        self.interval_s = interval_s
        self.peak_mib: float | None = None
        self.note: str | None = None
        self.peak_rss_mib = 0.0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._tensors: TensorPeak | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        self._peak_rss = self._process.memory_info().rss
        if self.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            tensors = TensorPeak()
            self.note = tensors.start()
            self._tensors = tensors if self.note is None else None
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)
        self.peak_rss_mib = self._peak_rss / MIB
        if self.gpu:
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated() / MIB
        elif self._tensors is not None:
            try:
                self._tensors.stop(count=exc_type is None)
            except Exception as error:  # reading the events failed (a PyTorch release that moved its private API)
                self.note = f"the profiler's memory events could not be read: {error!r}"
                return
            self.peak_mib = self._tensors.peak_bytes / MIB if exc_type is None else None
