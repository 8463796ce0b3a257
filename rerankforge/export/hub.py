"""Publish an exported model directory (weights, tokenizer, ``README.md`` card) on the Hugging Face Hub.

    card: {push_to_hub: true, hub_model_id: my-org/scifact-reranker, private: true}

The token comes from ``$HF_TOKEN`` or ``hf auth login`` (never from a config file). The repository
is created if missing (``exist_ok``) and the directory uploaded as one commit.
"""

from __future__ import annotations

from pathlib import Path


def push_to_hub(model_dir: str | Path, repo_id: str, private: bool = True, commit_message: str | None = None) -> str:
    """Upload ``model_dir`` to the model repository ``repo_id``; returns the repository URL."""
    from huggingface_hub import HfApi

    model_dir = Path(model_dir)
    if not (model_dir / "README.md").exists():
        raise FileNotFoundError(f"{model_dir} has no README.md model card; write one before pushing")
    api = HfApi()
    url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), repo_type="model",
                      commit_message=commit_message or f"rerankforge: upload {model_dir.name}",
                      ignore_patterns=[".tmp-*", "*.tmp"])
    return str(url)


def maybe_push(model_dir: str | Path, card_cfg) -> str | None:
    """``push_to_hub`` when the config's ``card`` section asks for it."""
    if not card_cfg.push_to_hub:
        return None
    url = push_to_hub(model_dir, card_cfg.hub_model_id, card_cfg.private)
    print(f"pushed {model_dir} to {url}")
    return url
