"""Algorithms and file formats with explicit parameters. Nothing here prints."""
