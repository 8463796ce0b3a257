"""Label jobs that enrich mined groups: graded qrels, teacher scores, local-LLM and API judgments.

Every job is resumable (see ``labels/job.py``) and writes a new groups file atomically.
"""

from rerankforge.labels.job import Labeler, LabelSummary, QueryLabels, partial_path, run_label_job

__all__ = ["LabelSummary", "Labeler", "QueryLabels", "partial_path", "run_label_job"]
