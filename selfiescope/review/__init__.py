"""``selfiescope review``: a local web app to look at the dataset and fix its labels."""
