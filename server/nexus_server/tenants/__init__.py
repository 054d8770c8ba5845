"""The tenants capability."""
