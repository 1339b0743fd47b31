"""Training: data from dataset manifests (through a local cache keyed by sha256), augmentation,
the loop, evaluation. MLflow is reached only through ``andon.training.tracking.Tracker``."""
