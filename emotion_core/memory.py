"""Peak memory of a block of work: allocated GPU memory on a GPU, resident set size (RSS) on the CPU."""

from __future__ import annotations

import threading

import psutil
import torch

MIB = 1024 * 1024


class PeakMemory:
    """Context manager that measures the peak memory of its block.

    On a GPU, ``peak_mib`` is ``torch.cuda.max_memory_allocated`` during the block. On the CPU it is the growth of
    the process's RSS over its value at entry, sampled by a background thread (``ru_maxrss`` never goes down, so it
    cannot measure a block that comes after a larger one). ``peak_rss_mib`` is the absolute peak RSS on the CPU,
    which is what shows a leak from one block to the next.
    """

    def __init__(self, interval_s: float = 0.02):
        self.gpu = torch.cuda.is_available()
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self.peak_rss_mib = 0.0
        self._process = psutil.Process()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def __enter__(self) -> "PeakMemory":
        self._start_rss = self._peak_rss = self._process.memory_info().rss
        if self.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start_gpu = torch.cuda.memory_allocated()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)
        self.peak_rss_mib = self._peak_rss / MIB
        if self.gpu:
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated() / MIB
        else:
            self.peak_mib = (self._peak_rss - self._start_rss) / MIB
