"""Envoy in front of Nexus: the rendered edge config, and (later) the sub-project gateway."""
