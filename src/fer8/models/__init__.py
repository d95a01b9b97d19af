"""Model files, the registry of named models, and the runtimes that run them; also the
bundled model files."""
