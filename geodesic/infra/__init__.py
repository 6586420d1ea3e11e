"""Plumbing with no knowledge of nets: files written as any tool writes them, threads and memory, the run
lifecycle (phases, statuses, budgets), progress, command-line options, Ray."""
