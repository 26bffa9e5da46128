"""Shared test setup: no downloads, and helpers to load fixture files."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The command line runs targets in workers forked from a preloaded server: transformers is imported
# there once, not in every worker of the many transformers models the tests lint.
os.environ.setdefault("GRAPHCHECK_PRELOAD", "transformers")
