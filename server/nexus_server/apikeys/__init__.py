"""The apikeys capability."""
