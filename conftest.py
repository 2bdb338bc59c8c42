# The plugin lives in the library (options, fixtures, hooks); this file only loads it.
pytest_plugins = ["dlclaims.pytest_plugin"]
