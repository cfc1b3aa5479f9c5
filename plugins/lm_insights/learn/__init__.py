"""Heads: models trained on the warehouse's own outcomes, stored in ``insights.models``, used by inference."""
