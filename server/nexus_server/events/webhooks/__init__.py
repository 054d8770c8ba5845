"""Outbound webhooks: endpoints, fan-out from the event log, signed and leased delivery."""
