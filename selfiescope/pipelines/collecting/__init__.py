"""Getting images in: collect (scrape/import), clean, record/replay, and one run's lifecycle."""
