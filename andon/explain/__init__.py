"""Explanations: saliency and SHAP maps per part (``maps``) and the audit report (``audit``)."""
