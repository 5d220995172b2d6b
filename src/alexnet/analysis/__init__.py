"""Looking at what was trained: the paper's figures 3 and 4, a run's report page, the ablations."""
