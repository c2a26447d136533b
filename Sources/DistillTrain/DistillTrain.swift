// Training: optimizers, schedules, checkpoints and the training loop.
