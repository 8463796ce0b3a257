"""rerankforge: train, distil and evaluate rerankers for search and RAG."""

__version__ = "0.1.0"
