"""Server assembly: services, health, reflection, interceptors, graceful stop."""
