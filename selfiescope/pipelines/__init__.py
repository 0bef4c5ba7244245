"""Pipelines compose core and plugins; each is callable from Python without the CLI."""
