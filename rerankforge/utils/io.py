"""File helpers: transparent gzip, strict UTF-8 JSONL with line numbers, atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

from rerankforge.errors import DataFormatError


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped); invalid UTF-8 names the line.

    Lines are decoded one at a time from bytes: a buffered text decoder would report a bad byte
    at whatever line its read-ahead chunk started on."""
    path = Path(path)
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    with raw:
        for lineno, data in enumerate(raw, start=1):
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(path, lineno, f"invalid UTF-8 at byte {err.start} ({err.reason})") from None
            yield lineno, line.rstrip("\r\n")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad JSON names file and line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, lineno, f"invalid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


TMP_SUFFIX = ".tmp-rerankforge"


def make_dirs(directory: str | os.PathLike) -> Path:
    """``mkdir -p``; a path component that is a regular file is a :class:`ConfigError` naming
    it (e.g. ``--out results.trec/run.trec``), not a FileExistsError traceback."""
    from rerankforge.errors import ConfigError

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [directory, *directory.parents] if p.exists() and not p.is_dir()), directory)
        raise ConfigError(f"cannot create directory {directory}: {blocker} is a file") from None
    return directory


def temp_path(path: str | os.PathLike) -> Path:
    """The temp name beside ``path`` that every atomic write of ``path`` uses: deterministic, so
    a write killed before its rename (SIGKILL, power loss: no ``finally`` runs) leaves a file the
    next write of the same path removes, not an orphan with a random name."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Write to ``temp_path(path)`` and rename it into place only on success.

    A crash or exception leaves the previous file (or nothing) — never half a file. One path has
    one writer at a time (the temp name is shared by writers of the same path).
    """
    path = Path(path)
    make_dirs(path.parent)
    tmp = temp_path(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # what a killed write of this path left
    try:
        if "b" in mode:
            fh = open(tmp, mode)
        elif path.suffix == ".gz":
            fh = io.TextIOWrapper(gzip.open(tmp, "wb"), encoding="utf-8")
        else:
            fh = open(tmp, mode, encoding="utf-8")
        with fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as PNG, written atomically."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    return path


def atomic_save_pretrained(model: Any, path: str | os.PathLike) -> Path:
    """``model.save_pretrained`` into a temporary sibling directory, then swap it into ``path``, so
    a crash mid-export never leaves a directory that loads with half its files."""
    import shutil

    path = Path(path)
    make_dirs(path.parent)
    tmp = path.parent / f".tmp-{path.name}"
    if tmp.exists():
        shutil.rmtree(tmp)  # deterministic name: a killed export of this path left it
    model.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path
