"""Training: one loop (``loop``), held-out evaluation (``evaluate``) and one recipe per shipped model."""
