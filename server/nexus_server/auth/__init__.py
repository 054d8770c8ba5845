"""Who is calling: principals, the ports capabilities fill, the revocation feed."""
