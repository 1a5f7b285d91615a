"""Multi-account mirroring (seed 003): one order fanned out to every active account."""
