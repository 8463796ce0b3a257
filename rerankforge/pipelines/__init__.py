"""Pipelines composed of the shared steps in ``pipelines.steps``: quickstart, distill, clicks experiment."""
