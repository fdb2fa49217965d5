"""pushrl.experiments."""
