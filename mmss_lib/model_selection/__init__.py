"""Many runs: sweeps over systems x categories x seeds x folds (`sweeps`, `mmss train`), the
K-fold design (`folds`), the Optuna search (`search`, `mmss tune`) and applying its result (`tuned`)."""
