"""The collected dataset as it stands: reading it, its card, forgetting, checking and exporting it."""
