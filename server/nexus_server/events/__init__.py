"""The events capability."""
