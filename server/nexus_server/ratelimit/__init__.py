"""Rate limits per API key, per user and per tenant, checked and charged together."""
