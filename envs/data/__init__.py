"""The log: schema, loaders, validation, leakage checks, splits, logging regime and propensity
estimation, context encoding, the embedded samples and the synthetic generator with known truth."""
