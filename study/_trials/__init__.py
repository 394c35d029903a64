"""The trial loop and what it runs: objective, search space, sampler and pruner, dead-trial recovery, worker processes."""
