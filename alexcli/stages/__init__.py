"""Stages: read upstream manifests, call core, write outputs atomically, return a result."""
