"""``rerankforge VERB ...``: each verb is a module in ``rerankforge.commands`` exposing
``add_parser(subparsers)`` and ``run(args) -> int``; new verbs need no edit here."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from rerankforge import __version__
from rerankforge.errors import RerankforgeError


def build_parser() -> argparse.ArgumentParser:
    import rerankforge.commands as commands

    parser = argparse.ArgumentParser(prog="rerankforge", description="Train, distil and evaluate rerankers.")
    parser.add_argument("--version", action="version", version=f"rerankforge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"rerankforge.commands.{mod.name}")
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter (checkpoint saves, weight-loading reports) out of the summaries."""
    for name in ("accelerate", "bm25s", "httpx", "urllib3", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        _quiet_libraries()
    from rerankforge.utils.allocator import tune_cpu_allocator

    tune_cpu_allocator()
    try:
        return int(args._run(args) or 0)
    except (RerankforgeError, FileNotFoundError) as err:
        # Input and config problems are the user's to fix: say what and where, no traceback.
        print(f"rerankforge {args.command}: error: {err}", file=sys.stderr)
        return 2
