"""A Markdown report as one self-contained HTML page, for the tracking UI.

MLflow's artifact view shows Markdown without its images (``![fig](fig.png)`` stays text) and
shows HTML in a frame where relative links go nowhere, so the page embeds each local image as a
``data:`` URI. Covers what reports here use: headings, paragraphs, pipe tables, ``- `` lists,
``**bold**``, ``*italic*``, ``` `code` ``` and images.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}"
          "td,th{border:1px solid #ccc;padding:.2em .6em}td.num{text-align:right}img{max-width:100%;margin:.5em 0}")


def _data_uri(path: str) -> str | None:
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    try:
        with open(path, "rb") as f:
            return f"data:{mime};base64,{base64.b64encode(f.read()).decode()}"
    except OSError:
        return None


def _inline(text: str, base_dir: str) -> str:
    """Escape, then images, links and emphasis; relative image paths become data URIs."""

    def image(m: re.Match) -> str:
        alt, src = m.group(1), html.unescape(m.group(2))
        if "://" not in src and not src.startswith("data:"):
            src = _data_uri(os.path.join(base_dir, src)) or src
        return f'<img alt="{alt}" src="{html.escape(src, quote=True)}">'

    out = _IMAGE.sub(image, html.escape(text, quote=False))
    out = _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])", r"<i>\1</i>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str], base_dir: str) -> str:
    head, rules, rows = _cells(lines[0]), _cells(lines[1]), [_cells(ln) for ln in lines[2:]]
    right = [r.endswith(":") and not r.startswith(":") for r in rules]
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c, base_dir)}</th>" for c in head) + "</tr>"]
    for row in rows:
        cells = "".join(f'<td{" class=num" if i < len(right) and right[i] else ""}>{_inline(c, base_dir)}</td>'
                        for i, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out + ["</table>"])


def _block(block: list[str], base_dir: str) -> str:
    first = block[0]
    if m := re.match(r"(#{1,6})\s+(.*)", first):
        level = len(m.group(1))
        rest = _block(block[1:], base_dir) if block[1:] else ""
        return f"<h{level}>{_inline(m.group(2), base_dir)}</h{level}>" + rest
    if len(block) >= 2 and first.lstrip().startswith("|") and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", block[1]):
        return _table(block, base_dir)
    if all(ln.lstrip().startswith(("- ", "* ")) for ln in block):
        return "<ul>" + "".join(f"<li>{_inline(ln.lstrip()[2:], base_dir)}</li>" for ln in block) + "</ul>"
    return f"<p>{_inline(' '.join(ln.strip() for ln in block), base_dir)}</p>"


def markdown_html(text: str, base_dir: str, title: str = "report") -> str:
    """``text`` (Markdown) as an HTML page; images relative to ``base_dir`` are embedded."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    body = "\n".join(_block(b, base_dir) for b in blocks if b)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_report_html(md_path: str) -> str:
    """Write ``<name>.html`` next to the local Markdown file ``md_path``; returns its path."""
    with open(md_path, encoding="utf-8") as f:
        text = f.read()
    out = os.path.splitext(md_path)[0] + ".html"
    page = markdown_html(text, os.path.dirname(os.path.abspath(md_path)), os.path.basename(md_path))
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out
