"""Sweep specs, the driver, the CLI, and reading results back.

`from sweeps import load_sweep` gives a sweep's tables as DataFrames (`sweeps.load`); it is
loaded on first use, so the CLI's fast commands do not pay for pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeps.load import SweepTables, load_sweep

__all__ = ["SweepTables", "load_sweep"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from sweeps import load

        return getattr(load, name)
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
