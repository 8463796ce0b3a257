"""Data bundled with the package (see each folder's SOURCE.md for origin and licence)."""

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent


def bundled_collection(name: str = "scifact") -> Path:
    path = RESOURCES / name
    if not (path / "queries.jsonl").exists():
        raise FileNotFoundError(f"bundled collection {name!r} not found at {path}")
    return path
