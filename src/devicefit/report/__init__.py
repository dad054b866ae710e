"""Reports people read: Markdown and one self-contained HTML page (plots inline) of a search study or of a
compression.

Names are imported on first use: ``import devicefit.report`` does not import matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devicefit._lazy import lazy_exports

if TYPE_CHECKING:
    from .compression import compress_report, load_compress_report
    from .document import ReportPaths
    from .search import PUBLISHED_DEVICE_TABLES, search_report

_EXPORTS: dict[str, str] = {
    "PUBLISHED_DEVICE_TABLES": "search",
    "ReportPaths": "document",
    "search_report": "search",
    "compress_report": "compression",
    "load_compress_report": "compression",
}

__all__ = ["PUBLISHED_DEVICE_TABLES", "ReportPaths", "compress_report", "load_compress_report", "search_report"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
