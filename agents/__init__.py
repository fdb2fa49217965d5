"""pushrl.agents."""
