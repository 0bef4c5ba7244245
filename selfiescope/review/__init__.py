"""`selfiescope review`: see and fix the dataset in a local web app.

The data layer (:mod:`.data`, with :mod:`.model`, :mod:`.snapshot`, :mod:`.actions`, :mod:`.thumbs`) reads and
changes the dataset in place; the web layer (:mod:`.app`, :mod:`.routes`, :mod:`.security`, templates and
static files) serves it behind a per-launch token.
"""
