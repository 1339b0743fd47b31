"""Training: data from dataset manifests (through a local cache keyed by sha256), augmentation,
the loop (``loop``), evaluation (``evaluate``). The network and the loop know nothing of MLflow;
``run.train_plant`` is the one place that logs and registers."""
