"""The classifier: the feature table, training, prediction, and what says how far to trust them."""
