"""The shared interceptor chain: one file per concern, composed once per method by chain.py."""
