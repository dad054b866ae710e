"""Reports people read: Markdown and one self-contained HTML page (plots inline) of a search study.

Names are imported on first use: ``import devicefit.report`` does not import matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

if TYPE_CHECKING:
    from .search_report import PUBLISHED_DEVICE_TABLES, ReportPaths, search_report

_EXPORTS: dict[str, str] = {
    "PUBLISHED_DEVICE_TABLES": "search_report",
    "ReportPaths": "search_report",
    "search_report": "search_report",
}

__all__ = ["PUBLISHED_DEVICE_TABLES", "ReportPaths", "search_report"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
