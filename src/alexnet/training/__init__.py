"""Training: the run (:mod:`~alexnet.training.loop`), the step and evaluation pass
(:mod:`~alexnet.training.engine`), the optimizers and schedules, the run folder, the time budget,
what a run prints, a torchrun launch, and the paper's two towers."""
