"""The identity capability."""
