"""The billing capability."""
