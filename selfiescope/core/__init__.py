"""The core: hook specifications, plugin manager, settings, events, engine, manifest.

The core names no concrete plugin; built-ins are loaded from a list of module names
(see :data:`selfiescope.core.plugins.DEFAULT_PLUGINS`), exactly like third-party ones.
"""
