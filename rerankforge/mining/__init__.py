"""Hard-negative mining: negative policies with false-negative filters, pseudo-queries, reports."""

from rerankforge.mining.negatives import NegativeMiner, NegativePolicy, mine_groups

__all__ = ["NegativeMiner", "NegativePolicy", "mine_groups"]
