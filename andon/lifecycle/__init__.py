"""A model's life: the MLflow registry conventions (``registry``), the promotion gate and rollback
(``promotion``), event-driven retraining (``retraining``)."""
