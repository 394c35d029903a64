"""Numbers and parameters as a person reads them, in lines, tables and reports. Light: no library is imported."""

from __future__ import annotations


def format_mib(value: float | None) -> str:
    """A memory figure for people: whole MiB from 100 on, else three significant digits (a head's 0.146, not 0)."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def interval_text(interval: dict, key: str = "test_accuracy") -> str:
    """0.6370 ± 0.0120 (95% interval 0.6155-0.6580), or without ± for one seed."""
    low, high = interval[f"{key}_ci95"]
    spread = f" ± {interval[f'{key}_std']:.4f}" if len(interval["test_accuracy_per_seed"]) > 1 else ""
    return f"{interval[key]:.4f}{spread} (95% interval {low:.4f}-{high:.4f})"


def params_text(params: dict) -> str:
    """Parameters for a line: three significant digits are enough to tell trials apart."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def first_few(items, shown: int = 5) -> str:
    """A list that a line can hold: all of a short one, else its first ``shown`` and how many more ("0, 3, 5, 8, 9
    and 995 more")."""
    items = list(items)
    if len(items) <= shown + 1:  # "and 1 more" would be no shorter than the item itself
        return ", ".join(map(str, items))
    return f"{', '.join(map(str, items[:shown]))} and {len(items) - shown} more"
