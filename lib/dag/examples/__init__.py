"""Example pipelines shipped with the task engine (``recommend``: plays -> recommendations)."""
