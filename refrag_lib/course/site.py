"""The course site: a finished run's executed notebooks, the README and docs/*.md as static HTML pages.

A learner reads what a normal run prints and draws before running anything. The site is always built from a
run folder (RUN_DIR/executed/*.ipynb, written by `make course`), never from outputs edited by hand, and every
page says which run it shows. nbconvert (Jupyter's own converter) renders the notebooks with every output type
they make; markdown-it-py (CommonMark) renders the README and docs. Both are imported where they are used:
Colab imports this package and needs neither.
"""

from __future__ import annotations

import argparse
import html
import json
import posixpath
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import CourseError, MissingArtifactError
from ..runs import course_commit, repo_root
from .notebooks import notebook_errors

MARKER = ".refrag-site"  # the site's own folder: only a folder holding it is replaced by a rebuild
# A remote image (the Colab badge) would make a page reach the network: its alt text stands in for it.
_REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\(https?://[^)]*\)")
_HEADING = re.compile(r"^#\s+(.+)$", re.MULTILINE)

# nbconvert's JupyterLab template, with everything it would fetch from a CDN left out (require.js, MathJax: the
# course's prose has no TeX; mermaid; the widget manager: saved widgets are progress bars and 07's form, which
# needs a kernel), JupyterLab's dark theme when the reader's system is dark, and the site's header.
NOTEBOOK_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block notebook_css -%}
{{ super() }}
{{ resources.include_css("static/theme-dark.css")
   | replace('<style type="text/css">', '<style type="text/css" media="(prefers-color-scheme: dark)">') }}
<link rel="stylesheet" href="site.css">
{%- endblock notebook_css -%}
{%- block body_header -%}{{ super() }}{{ resources.site_header }}{%- endblock body_header -%}
"""

MARKDOWN_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<link rel="stylesheet" href="site.css">
</head>
<body class="site-page">
{header}
<main class="site-markdown">
{body}
</main>
</body>
</html>
"""

CSS = """/* The course site's header and README/docs pages; notebook pages keep JupyterLab's look (light or dark). */
:root {
  color-scheme: light dark;
  --site-fg: #1f2328; --site-bg: #ffffff; --site-muted: #59636e; --site-line: #d1d9e0;
  --site-link: #0969da; --site-code: #f2f4f6;
}
@media (prefers-color-scheme: dark) {
  :root {
    --site-fg: #e6edf3; --site-bg: #0d1117; --site-muted: #9198a1; --site-line: #3d444d;
    --site-link: #4493f8; --site-code: #1b222c;
  }
  .jp-RenderedImage img { background: #ffffff; }  /* figures are drawn for a white page */
}
.site-page { margin: 0; background: var(--site-bg); color: var(--site-fg); font: 16px/1.6 system-ui, sans-serif; }
.site-header {
  padding: 0.5rem 1rem; border-bottom: 1px solid var(--site-line); background: var(--site-bg);
  color: var(--site-fg); font: 14px/1.6 system-ui, sans-serif;
}
.site-nav a { margin-right: 0.7rem; color: var(--site-link); text-decoration: none; white-space: nowrap; }
.site-nav a:hover { text-decoration: underline; }
.site-nav a[aria-current="page"] { color: var(--site-fg); font-weight: 600; }
.site-nav span { margin-right: 0.4rem; color: var(--site-muted); }
.site-run { margin: 0.2rem 0 0; color: var(--site-muted); }
.site-markdown { max-width: 52rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
.site-markdown a { color: var(--site-link); }
.site-markdown code, .site-markdown pre { background: var(--site-code); font: 0.9em/1.5 ui-monospace, monospace; }
.site-markdown code { padding: 0.1em 0.3em; border-radius: 4px; }
.site-markdown pre { padding: 0.8rem 1rem; overflow-x: auto; border-radius: 6px; }
.site-markdown pre code { padding: 0; background: none; }
.site-markdown table { display: block; overflow-x: auto; border-collapse: collapse; }
.site-markdown th, .site-markdown td { padding: 0.3rem 0.7rem; border: 1px solid var(--site-line); }
"""


@dataclass(frozen=True)
class Page:
    """One page of the site: the file it is made from, its name in the site and its label in the navigation."""

    source: Path
    name: str
    label: str

    @property
    def notebook(self) -> bool:
        return self.source.suffix == ".ipynb"

    def key(self, sources: Path) -> str:
        """How a link in the repository names the source: README.md, docs/x.md, notebooks/NN_name.ipynb."""
        if self.notebook:
            return f"notebooks/{self.source.name}"  # the executed copy of notebooks/NN_name.ipynb
        return self.source.relative_to(sources).as_posix()


def executed_notebooks(run_dir: Path) -> list[Path]:
    """The run's executed notebooks in course order; refuses a run with none or with one that failed (a site shows
    what a normal run looks like)."""
    found = sorted((run_dir / "executed").glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise MissingArtifactError(f"{run_dir / 'executed'} holds no executed notebook: run the course into this "
                                   f"folder first (`make course RUN_DIR={run_dir}`), then build the site.")
    for path in found:
        errors = notebook_errors(json.loads(path.read_text()))
        if errors:
            raise CourseError(f"{path} holds {len(errors)} error output(s), so it is not a normal run: open it for the "
                              "traceback, fix the cause and run the course again (`make course`) before `make site`.")
    return found


def site_pages(notebooks: list[Path], sources: Path) -> list[Page]:
    """Home (the README), the notebooks in order, then the docs pages: the navigation's order."""
    home = [Page(sources / "README.md", "index.html", "home")]
    executed = [Page(path, f"{path.stem}.html", path.stem.replace("_", " ")) for path in notebooks]
    docs = [Page(path, f"{path.stem}.html", path.stem) for path in sorted((sources / "docs").glob("*.md"))]
    return home + executed + docs


def run_line(run_dir: Path, notebooks: list[Path], sources: Path) -> str:
    """Which run the pages show: its folder, preset (from its metrics), date, and the course's commit."""
    metrics = next((json.loads(path.read_text()) for path in sorted(run_dir.glob("*/metrics.json"))), {})
    preset = metrics.get("preset", run_dir.name)
    k = f", k = {metrics['k']}" if "k" in metrics else ""
    smoke = ", SMOKE parameters" if metrics.get("smoke") else ""
    day = datetime.fromtimestamp(max(path.stat().st_mtime for path in notebooks)).date().isoformat()
    commit = course_commit(short=True, checkout=sources)
    return f"Built from the run {run_dir.name} (preset {preset}{k}{smoke}) executed on {day}" + (
        f", course commit {commit}." if commit else ".")


def header(pages: list[Page], current: Page, run: str) -> str:
    """The navigation bar (the current page marked) and the run line, the same on every page."""
    def link(page: Page) -> str:
        mark = ' aria-current="page"' if page == current else ""
        return f'<a href="{page.name}"{mark}>{html.escape(page.label)}</a>'

    notebooks = [page for page in pages if page.notebook]
    docs = [page for page in pages[1:] if not page.notebook]
    nav = " ".join([link(pages[0]), "<span>notebooks:</span>", *map(link, notebooks), "<span>docs:</span>",
                    *map(link, docs)])
    return (f'<header class="site-header"><nav class="site-nav">{nav}</nav>'
            f'<p class="site-run">{html.escape(run)}</p></header>')


def title_of(markdown: str, fallback: str) -> str:
    """A page's title: its first level-1 heading."""
    found = _HEADING.search(markdown)
    return found[1].strip() if found else fallback


def slug(text: str) -> str:
    """GitHub's id for a heading, so that links such as docs/colab.md#the-rehearsal land on it."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def site_link(href: str, source_dir: str, links: dict[str, str]) -> str:
    """A link to another page of the site (README, docs, notebooks) made a link to its HTML page; others unchanged."""
    path, hash_, fragment = href.partition("#")
    target = links.get(posixpath.normpath(posixpath.join(source_dir, path))) if path and "://" not in path else None
    return target + hash_ + fragment if target else href


def markdown_html(markdown: str, source_dir: str, links: dict[str, str]) -> str:
    """CommonMark with tables, headings given GitHub's ids and links between pages rewritten."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(markdown)
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open":
            opening.attrSet("id", slug(inline.content))
    for token in (child for inline in tokens if inline.type == "inline" for child in inline.children or []):
        if token.type == "link_open":
            token.attrSet("href", site_link(str(token.attrGet("href")), source_dir, links))
    return parser.renderer.render(tokens, parser.options, {})


def markdown_page(page: Page, sources: Path, links: dict[str, str], top: str) -> str:
    text = page.source.read_text()
    source_dir = posixpath.dirname(page.key(sources))
    return MARKDOWN_PAGE.format(title=html.escape(title_of(text, page.source.stem)), header=top,
                                body=markdown_html(text, source_dir, links))


def notebook_exporter():
    """nbconvert's HTML exporter on the JupyterLab template; figures are already data: URIs in the outputs, and
    embed_images inlines any local image a markdown cell shows, so every page stands alone."""
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", embed_images=True, raw_template=NOTEBOOK_TEMPLATE)


def notebook_page(page: Page, exporter, top: str) -> str:
    import nbformat

    notebook = nbformat.read(page.source, as_version=4)
    markdown = [cell for cell in notebook.cells if cell.cell_type == "markdown"]
    for cell in markdown:
        cell.source = _REMOTE_IMAGE.sub(r"\1", cell.source)
    notebook.metadata["title"] = title_of("\n".join(cell.source for cell in markdown), page.source.stem)
    resources = {"metadata": {"name": page.source.stem, "path": str(page.source.parent)}, "site_header": top}
    return exporter.from_notebook_node(notebook, resources=resources)[0]


def replace_site(out_dir: Path) -> None:
    """An empty folder for the site: a previous site is replaced, a folder the user made is never touched."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CourseError(f"{out_dir} is a file, not a folder: give --out a new or empty folder for the site.")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).is_file():
            raise CourseError(f"{out_dir} is not empty and is not a course site (it has no {MARKER}): give --out a "
                              "new or empty folder, the site will not overwrite your files.")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("A course site built by `python -m refrag_lib site`: each build replaces it.\n")


def build_site(run_dir: str | Path, out_dir: str | Path, sources: Path | None = None) -> list[Path]:
    """Write the site of a run into out_dir: index.html (the README), a page per executed notebook and per
    docs/*.md page (sources: the course checkout they come from). Returns the pages, index.html first."""
    run_dir, out_dir, sources = Path(run_dir).resolve(), Path(out_dir).resolve(), sources or repo_root()
    notebooks = executed_notebooks(run_dir)
    pages = site_pages(notebooks, sources)
    links = {page.key(sources): page.name for page in pages}
    run = run_line(run_dir, notebooks, sources)
    exporter = notebook_exporter()
    replace_site(out_dir)
    (out_dir / "site.css").write_text(CSS)
    for page in pages:
        top = header(pages, page, run)
        text = notebook_page(page, exporter, top) if page.notebook else markdown_page(page, sources, links, top)
        (out_dir / page.name).write_text(text)
    return [out_dir / page.name for page in pages]


def main(argv: list[str]) -> int:
    """`python -m refrag_lib site --run-dir DIR [--out DIR]`: the course site of a finished run."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib site", description=main.__doc__)
    parser.add_argument("--run-dir", required=True, help="a run folder `make course` has finished (runs/cpu)")
    parser.add_argument("--out", default="", help="the site's folder (default RUN_DIR/site)")
    args = parser.parse_args(argv)
    pages = build_site(args.run_dir, args.out or Path(args.run_dir) / "site")
    print(f"{pages[0]} ({len(pages)} pages)")
    return 0
