"""One document, two renderings: Markdown (figures as PNG files beside it) and a self-contained HTML page
(figures as inline SVG, a small inline stylesheet, no external reference of any kind)."""

from __future__ import annotations

import html
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import write_atomic
from ..errors import InputError

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #d0d7de;padding:.25rem .6rem;
text-align:left}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.85rem;background:#f6f8fa;padding:.1rem .25rem;border-radius:3px;word-break:break-all}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.85rem;color:#57606a}
p.note{color:#57606a;font-size:.9rem}
"""


@dataclass(frozen=True)
class ReportPaths:
    """The files a report wrote: the Markdown, the self-contained HTML page, and the Markdown's PNG figures."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]


@dataclass
class Document:
    """Blocks in order: headings, paragraphs, tables and matplotlib figures."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def paragraph(self, text: str, note: bool = False) -> None:
        self.blocks.append(("note" if note else "p", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def figure(self, name: str, fig: Any, caption: str) -> None:
        """``fig``: a matplotlib :class:`~matplotlib.figure.Figure`, rendered now: PNG for the Markdown, SVG for
        the HTML page (text drawn as paths, so the page needs no font; no date and a fixed hash salt, so equal
        input gives equal files; every id prefixed with ``name``, so two figures never share an id)."""
        import matplotlib

        png, svg = io.BytesIO(), io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": name}):
            fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
            fig.savefig(svg, format="svg", metadata={"Date": None})
        text = svg.getvalue()
        self.blocks.append(("figure", (name, png.getvalue(), _scoped(text[text.index("<svg"):], name), caption)))

    # -- renderings ---------------------------------------------------------------------------------------
    def write(self, out_dir: str | os.PathLike[str], stem: str) -> tuple[Path, Path, list[Path]]:
        """Write ``<stem>.md`` with its PNG figures and ``<stem>.html`` (each file atomically); their paths."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            figures = []
            for kind, value in self.blocks:
                if kind == "figure":
                    name, png, _, _ = value
                    path = out / f"{stem}_{name}.png"
                    write_atomic(path, png)
                    figures.append(path)
            md, page = out / f"{stem}.md", out / f"{stem}.html"
            write_atomic(md, self.markdown(stem).encode())
            write_atomic(page, self.html().encode())
        except OSError as exc:
            raise InputError(f"report folder {str(out)!r} cannot be written: {exc.strerror or exc}") from None
        return md, page, figures

    def markdown(self, stem: str) -> str:
        lines = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                lines += [f"## {value}", ""]
            elif kind in ("p", "note"):
                lines += [value, ""]
            elif kind == "table":
                header, rows = value
                lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows] + [""]
            elif kind == "figure":
                name, _, _, caption = value
                lines += [f"![{caption}]({stem}_{name}.png)", "", f"*{caption}*", ""]
        return "\n".join(lines)

    def html(self) -> str:
        e = html.escape
        parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                 '<meta name="viewport" content="width=device-width, initial-scale=1">',
                 f"<title>{e(self.title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                parts.append(f"<h2>{e(value)}</h2>")
            elif kind == "p":
                parts.append(f"<p>{_inline(value)}</p>")
            elif kind == "note":
                parts.append(f'<p class="note">{_inline(value)}</p>')
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{e(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "figure":
                name, _, svg, caption = value
                parts.append(f'<figure id="{e(name)}">{svg}<figcaption>{e(caption)}</figcaption></figure>')
        parts.append("</body></html>")
        return "\n".join(parts)


def _cell(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="num">{html.escape(_fmt(v))}</td>'
    return f"<td>{_inline(_fmt(v))}</td>"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _inline(text: str) -> str:
    """Markdown's inline code (`x`) and bold (**x**) as HTML; everything else escaped."""
    out, code = [], False
    for i, piece in enumerate(html.escape(text).split("`")):
        code = i % 2 == 1
        if code:
            out.append(f"<code>{piece}</code>")
        else:
            bold = piece.split("**")
            out.append("".join(f"<b>{b}</b>" if j % 2 else b for j, b in enumerate(bold)))
    return "".join(out)


def _scoped(svg: str, scope: str) -> str:
    """``svg`` with each of its ids, and every reference to one (``href="#id"``, ``url(#id)``), prefixed with
    ``scope``: matplotlib names glyphs and markers alike in every figure (``DejaVuSans-30``)."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))

    def scoped(m: re.Match[str]) -> str:
        name = m.group(2)
        return m.group(1) + (f"{scope}-{name}" if name in ids else name) + m.group(3)

    return re.sub(r'(\bid="|href="#|url\(#)([^")]+)([")])', scoped, svg)
