"""Training: one loop (``loop``), held-out evaluation (``evaluate``), one recipe per shipped model, and
``grammar_eval`` (the held-out parts decoded with and without grammars)."""
