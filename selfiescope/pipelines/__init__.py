"""Pipelines compose core and plugins; each is callable from Python without the CLI.

By what they are about: :mod:`.collecting` (getting images in), :mod:`.model` (the
classifier) and :mod:`.dataset_care` (the collected dataset as it stands), the last under
the other two, which never import each other (docs/architecture.md's layer table).
"""
