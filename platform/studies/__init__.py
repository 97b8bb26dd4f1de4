"""A study: its driver under Ray Tune (grid, Optuna, ASHA), what its store says about it, one driver at a time
(locks and leases), the live view, and the ensemble of its top configurations."""
