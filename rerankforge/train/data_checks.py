"""Checks on the training groups before any step runs (issue 17: nothing silent).

Two kinds of bad data used to waste a run: a candidate stored without text whose id the
collection lacks crashed *mid-training* when its batch came up, and groups with nothing to learn
from (no positive for a listwise/pairwise loss, no teacher score for a distillation loss) trained
at loss 0.0 with no word. Both are found here, by one pass over the groups:

* a text-less candidate that cannot be looked up is an error naming the document id and the
  groups file and line (or the group index for in-memory data);
* groups that *no* loss term can learn from are skipped with a warning and a count; when that
  is every group, it is an error (the run would do nothing).

Lazy Arrow groups (a saved Hugging Face dataset directory) are not scanned: decoding millions of
rows up front would cost what the lazy view saves. Their rows are still validated when read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rerankforge.data.groups import Group
from rerankforge.errors import DataFormatError

log = logging.getLogger(__name__)


def _useful_for(group: Group, loss) -> bool:
    """Whether ``loss`` (one term) gets anything from ``group``."""
    if loss.target == "teacher":
        return any(c.teacher is not None and math.isfinite(c.teacher) for c in group.candidates)
    if loss.target == "labels" and getattr(loss, "needs_positive", False):
        return any(c.label is not None and c.label > 0 for c in group.candidates)
    return True


def _where(source: Any, index: int) -> tuple[str, int | None]:
    """(file, line) of group ``index`` when the groups came from a JSONL file, else a label."""
    if isinstance(source, (str, Path)) and Path(source).is_file():
        from rerankforge.utils.io import iter_jsonl

        for k, (lineno, _) in enumerate(iter_jsonl(source)):
            if k == index:
                return str(source), lineno
        return str(source), None
    return "train_data", None


def check_groups(groups: Sequence[Group], terms: Sequence[Any], text_of: Callable[[str], str] | None,
                 source: Any = None) -> Sequence[Group]:
    """``groups`` without the ones no term of the loss can learn from (see the module docstring);
    raises :class:`DataFormatError` for a text-less candidate that cannot be looked up, or when no
    group is left."""
    if not isinstance(groups, list):
        return groups
    looked_up: set[str] = set()
    kept: list[Group] = []
    for i, group in enumerate(groups):
        for c in group.candidates:
            if c.text is not None or c.doc_id in looked_up:
                continue
            if text_of is None:
                path, line = _where(source, i)
                raise DataFormatError(path, line,
                                      f"group {group.query_id!r}{'' if line else f' (group {i})'}: candidate "
                                      f"{c.doc_id!r} has no text and no collection was given (set "
                                      f"data.collection to look texts up)")
            try:
                text_of(c.doc_id)
            except (KeyError, IndexError):
                path, line = _where(source, i)
                raise DataFormatError(path, line, f"group {group.query_id!r}{'' if line else f' (group {i})'}: "
                                      f"candidate {c.doc_id!r} has no text and the collection has no document "
                                      f"{c.doc_id!r}") from None
            looked_up.add(c.doc_id)
        if any(_useful_for(group, loss) for loss in terms):
            kept.append(group)
    skipped = len(groups) - len(kept)
    if skipped:
        names = ", ".join(sorted({loss.name or type(loss).__name__ for loss in terms}))
        what = ("a teacher score" if all(loss.target == "teacher" for loss in terms)
                else "a positive (label > 0)" if all(loss.target == "labels" for loss in terms)
                else "a positive (label > 0) or a teacher score")
        where = str(source) if isinstance(source, (str, Path)) else "train_data"
        if not kept:
            raise DataFormatError(where, None, f"none of the {len(groups)} groups has {what}: loss {names} would be "
                                  f"0 at every step (check the labels, or add teacher scores with data.teacher)")
        log.warning("%s: skipped %d of %d groups without %s (loss %s learns nothing from them)", where, skipped,
                    len(groups), what, names)
    return kept
