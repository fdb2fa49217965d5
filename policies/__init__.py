"""pushrl.policies."""
