"""The learned user response (torch): the response model, its report, refits, fidelity checks and
cold start."""
