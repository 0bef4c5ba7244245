"""`selfiescope review`: see and fix the dataset (data layer: :mod:`.data`)."""
