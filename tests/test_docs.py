"""The repository carries its own documentation: nothing in it points outside the repository, and
every relative link in README.md and docs/ (and every docs/….md#section cited in code) leads to a
file, and a section, that a fresh clone has.

"In the repository" means tracked by git (`git ls-files`, the index included): a file that exists
only in this working tree is missing from a clone."""
import re
import subprocess
from functools import cache, lru_cache
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parent.parent
THIS = "tests/test_docs.py"
# the project's steering briefs live outside the repository; a clone does not have them
OUTSIDE = (b"../shared", b"shared/METHOD.md", b"shared/DESIGN.md")
BRIEF_BY_NAME = re.compile(rb"\b(?:METHOD|DESIGN)\.md\b")  # case-sensitive: docs/method.md is ours
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and [text](target "title")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, …
# a repository path such as docs/method.md#mps; not part of a longer path or a URL
DOC_CITATION = re.compile(r"(?<![\w/.-])docs/[A-Za-z0-9_./-]+?\.md(?:#[A-Za-z0-9_-]+)?")


@lru_cache(maxsize=1)
def tracked() -> tuple[str, ...]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return tuple(p for p in out.decode().split("\0") if p and (REPO / p).is_file())


def tracked_dirs() -> set[str]:
    dirs = set()
    for f in tracked():
        for parent in PurePosixPath(f).parents:
            dirs.add(str(parent))
    return dirs


def markdown_files() -> list[str]:
    return [f for f in tracked() if f.endswith(".md") and (f == "README.md" or f.startswith("docs/"))]


def lines_matching(pattern, exclude=(THIS,)) -> list[str]:
    """'file:line: text' for every line of a tracked file that matches `pattern` (bytes regex)."""
    hits = []
    for f in tracked():
        if f in exclude:
            continue
        data = (REPO / f).read_bytes()
        if not pattern.search(data):
            continue
        for n, line in enumerate(data.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{f}:{n}: {line.decode(errors='replace').strip()[:120]}")
    return hits


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def outside_code_fences(text: str):
    """(line number, line) of a markdown text, skipping fenced code blocks (``` or ~~~)."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)[0]
            elif marker.group(1)[0] == fence:
                fence = None
            continue
        if fence is None:
            yield n, line


@cache
def anchors(md_file: str) -> frozenset[str]:
    """The section anchors of a markdown file: its headings (duplicates numbered as GitHub does)
    and explicit <a id=…> / <a name=…> targets."""
    seen, out = {}, set()
    for _, line in outside_code_fences((REPO / md_file).read_text(encoding="utf-8")):
        out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
        m = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def broken(source: str, target: str, folder: PurePosixPath) -> str | None:
    """Why `target`, written in `source` (file:line) and relative to `folder`, does not resolve in a
    clone; None if it does."""
    path, _, anchor = target.partition("#")
    resolved = source.split(":")[0]  # a bare #anchor is a section of the file itself
    if path:
        parts = []
        for part in (folder / path).parts:  # resolve '..' and '.' without the file system
            if part == "..":
                if not parts:
                    return f"{source}: {target} leaves the repository"
                parts.pop()
            elif part != ".":
                parts.append(part)
        resolved = "/".join(parts)
        if resolved not in tracked() and resolved not in tracked_dirs():
            return f"{source}: {target} -> {resolved} is not a tracked file or folder"
    if anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
        return f"{source}: {target} -> {resolved} has no section #{anchor}"
    return None


def test_no_tracked_file_points_to_the_shared_briefs():
    hits = lines_matching(re.compile(b"|".join(re.escape(s) for s in OUTSIDE)))
    assert not hits, ("these cite files outside the repository; point them to docs/method.md or docs/design.md:\n"
                      + "\n".join(hits))


def test_no_tracked_file_cites_the_briefs_by_name():
    # "METHOD.md §2" names a file a clone does not have, even without the ../shared prefix
    hits = lines_matching(BRIEF_BY_NAME)
    assert not hits, ("these cite METHOD.md or DESIGN.md, which are not in the repository; cite "
                      "docs/method.md#<section> or docs/design.md#<section>:\n" + "\n".join(hits))


def test_relative_links_in_readme_and_docs_lead_to_tracked_files_and_sections():
    problems = []
    for md in markdown_files():
        for n, line in outside_code_fences((REPO / md).read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if not SCHEME.match(target):
                    problems.append(broken(f"{md}:{n}", target, PurePosixPath(md).parent))
    problems = [p for p in problems if p]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_sections_cited_in_code_and_tests_exist():
    # "docs/method.md#mps" in a docstring or comment must name a file and a section a clone has
    problems = []
    for f in tracked():
        data = (REPO / f).read_bytes()
        if f == THIS or b"\0" in data or b"docs/" not in data:
            continue  # binary files (checkpoints, images) and files that cite no docs
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            problems += [broken(f"{f}:{n}", cited, PurePosixPath(".")) for cited in DOC_CITATION.findall(line)]
    problems = [p for p in problems if p]
    assert not problems, "citations of docs that a clone does not have:\n" + "\n".join(problems)


def test_the_checks_catch_what_they_are_for():
    # the slug and link rules on known cases, so that the tests above passing means something
    assert slug("Validation split and model selection") == "validation-split-and-model-selection"
    assert slug("The five methods at the app's default preset (digits, 10%)") == \
        "the-five-methods-at-the-apps-default-preset-digits-10"
    assert slug("`TrainConfig` and *MLTP*") == "trainconfig-and-mltp"
    assert broken("README.md:1", "docs/no-such-file.md", PurePosixPath(".")) is not None
    assert broken("README.md:1", "../shared/METHOD.md", PurePosixPath(".")) is not None
    assert broken("README.md:1", "docs/app.md#no-such-section", PurePosixPath(".")) is not None
    assert broken("docs/app.md:1", "run-directory.md", PurePosixPath("docs")) is None
    assert broken("docs/app.md:1", "../README.md#data", PurePosixPath("docs")) is None
    assert LINK.findall("see [a](docs/x.md#y) and [b](https://e.org) and [c](d.md \"t\")") == \
        ["docs/x.md#y", "https://e.org", "d.md"]
    assert DOC_CITATION.findall("see docs/method.md#mps, https://x.org/docs/a.md") == ["docs/method.md#mps"]
    assert BRIEF_BY_NAME.search("(METHOD.md §2)".encode()) and not BRIEF_BY_NAME.search(b"docs/method.md#pcr")
