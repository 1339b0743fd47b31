"""Federated governance: policy checks across plants (``policy``), the central baseline and plant
fine-tuning (``central``), the cross-plant report (``report``)."""
