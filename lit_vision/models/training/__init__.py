"""The training module and its parts: ``ImageClassifier`` (steps, metrics, hooks) and what it delegates to:
losses, optimizers and parameter groups, schedulers and resuming into a changed schedule, the non-finite loss
guard, SyncBatchNorm checks and pretrained weights."""
