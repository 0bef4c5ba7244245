"""Built-in plugins. Each module implements hooks from :mod:`selfiescope.core.hookspecs`
and is registered from :data:`selfiescope.core.plugins.DEFAULT_PLUGINS`, exactly like a
third-party plugin."""
