"""The Python samples in the docs run: README.md, docs/tutorial.md, docs/concepts/*.md and
docs/reference/*.md.

Each ```python block is one test, named by file and line. The blocks of one file run in
order in one namespace (a later block continues an earlier one) and in one temporary
folder (the working directory while they run, so ``Engine.open("./data")`` lands there).
A block that cannot run on its own (a fragment, a network service) carries, on the line
right before its fence::

    <!-- docs-test: skip (why it cannot run) -->

A block that is a module of the app (a file of its functions package) says where it
lives; it is written there, in the file's folder (on ``sys.path`` while the file's blocks
run), for later blocks to import::

    <!-- docs-test: file myapp/functions/messages.py -->

A skipped block must still parse; any other block that raises fails its test. When a
file's blocks are done (the next file starts, or the last test ends), the engines they
opened are closed and the modules they imported from their folder forgotten.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine import Engine

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [
    ROOT / "README.md",
    ROOT / "docs" / "tutorial.md",
    *sorted((ROOT / "docs" / "concepts").glob("*.md")),
    *sorted((ROOT / "docs" / "reference").glob("*.md")),
]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^`\s]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip\s*\((?P<reason>[^)]*\S[^)]*)\)\s*$")
_FILE = re.compile(r"^\s*file\s+(?P<module>(?:[A-Za-z_]\w*/)*[A-Za-z_]\w*\.py)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # the line of the opening fence, 1-based
    source: str
    skip: str | None = None  # the reason given by a skip marker: the block does not run
    module: str | None = None  # the path given by a file marker: the block is written there

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract_blocks(path: Path) -> list[Block]:
    """The ```python blocks of ``path``, in order; raises ValueError for a marker that is
    malformed or not right before a python fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    pending: tuple[int, dict[str, str]] | None = None  # the line and fields of a marker
    while i < len(lines):
        marker = _MARKER.match(lines[i])
        if marker is not None:
            skip, module = _SKIP.match(marker.group("body")), _FILE.match(marker.group("body"))
            if skip is None and module is None:
                raise ValueError(
                    f"{path}:{i + 1}: expected <!-- docs-test: skip (reason) --> or "
                    f"<!-- docs-test: file package/module.py -->, got {lines[i].strip()!r}"
                )
            if skip is not None:
                pending = (i + 1, {"skip": skip.group("reason").strip()})
            else:
                pending = (i + 1, {"module": module.group("module")})  # type: ignore[union-attr]
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if fence is None:
            if pending is not None:
                raise ValueError(
                    f"{path}:{pending[0]}: a docs-test marker must be on the line right "
                    "before a ```python fence"
                )
            i += 1
            continue
        indent, lang, start = fence.group("indent"), fence.group("lang"), i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        if lang == "python":
            fields = pending[1] if pending is not None else {}
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", **fields))
        elif pending is not None:
            raise ValueError(f"{path}:{pending[0]}: a docs-test marker before a ```{lang} block")
        pending = None
    return blocks


BLOCKS = [block for path in DOC_FILES for block in extract_blocks(path)]


@dataclass
class _FileRun:
    """One doc file's namespace, folder, and the engines its blocks opened."""

    folder: Path
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    done: set[int] = field(default_factory=set)  # lines of the blocks already run
    engines: list[Engine] = field(default_factory=list)

    def finish(self) -> None:
        for engine in self.engines:
            engine.close()
        self.engines.clear()
        for name, module in list(sys.modules.items()):
            if Path(getattr(module, "__file__", None) or "/").is_relative_to(self.folder):
                del sys.modules[name]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[Path, _FileRun]]:
    found: dict[Path, _FileRun] = {}
    yield found
    for run in found.values():
        run.finish()


def _execute(block: Block, run: _FileRun) -> None:
    if block.module is not None:
        target = run.folder / block.module
        for package in reversed(Path(block.module).parents[:-1]):  # myapp, myapp/functions
            (run.folder / package).mkdir(exist_ok=True)
            (run.folder / package / "__init__.py").touch()
        target.write_text(block.source, encoding="utf-8")
        importlib.invalidate_caches()
    else:
        # Padding keeps the traceback's line numbers those of the Markdown file.
        exec(compile("\n" * block.line + block.source, str(block.path), "exec"), run.namespace)
    run.done.add(block.line)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_doc_block_runs(
    block: Block,
    runs: dict[Path, _FileRun],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if block.skip is not None:
        compile(block.source, block.name, "exec")  # a skipped block still parses
        pytest.skip(f"{block.name}: {block.skip}")
    run = runs.get(block.path)
    if run is None:
        for other in runs.values():  # one file's modules (myapp/...) never meet another's
            other.finish()
        run = runs[block.path] = _FileRun(tmp_path_factory.mktemp(block.path.stem))
    monkeypatch.chdir(run.folder)
    monkeypatch.syspath_prepend(str(run.folder))
    opened = run.engines
    real_open = Engine.open.__func__  # type: ignore[attr-defined]

    def recording_open(cls: type[Engine], *args: Any, **kwargs: Any) -> Engine:
        engine = real_open(cls, *args, **kwargs)
        opened.append(engine)
        return engine

    monkeypatch.setattr(Engine, "open", classmethod(recording_open))
    # A block selected alone (pytest -k) still gets the earlier blocks of its file first.
    for earlier in BLOCKS:
        if earlier.path != block.path or earlier.line >= block.line:
            continue
        if earlier.skip is None and earlier.line not in run.done:
            try:
                _execute(earlier, run)
            except Exception as error:
                pytest.fail(f"the earlier block {earlier.name} raises {error!r}")
    _execute(block, run)


def test_every_doc_file_is_read() -> None:
    assert all(path.is_file() for path in DOC_FILES)
    assert {b.path for b in BLOCKS} >= {ROOT / "README.md", ROOT / "docs" / "tutorial.md"}


def test_markers_are_checked(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- docs-test: skip (needs a network) -->\n```python\nx = 1\n```\n")
    [block] = extract_blocks(doc)
    assert block == Block(doc, 2, "x = 1\n", skip="needs a network")
    doc.write_text("<!-- docs-test: file app/functions/notes.py -->\n```python\nx = 1\n```\n")
    assert extract_blocks(doc) == [Block(doc, 2, "x = 1\n", module="app/functions/notes.py")]
    for bad in (
        "<!-- docs-test: skip -->\n```python\nx = 1\n```\n",  # no reason
        "<!-- docs-test: skip (why) -->\n\n```python\nx = 1\n```\n",  # not right before
        "<!-- docs-test: skip (why) -->\n```sh\nls\n```\n",  # not a python block
        "<!-- docs-test: skpi (why) -->\n```python\nx = 1\n```\n",  # a typo
        "<!-- docs-test: file ../notes.py -->\n```python\nx = 1\n```\n",  # outside
    ):
        doc.write_text(bad)
        with pytest.raises(ValueError, match="docs-test"):
            extract_blocks(doc)
