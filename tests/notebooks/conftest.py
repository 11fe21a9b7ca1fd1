"""nbval settings for every notebook: compare text outputs strictly, skip what is not reproducible.

HTML, JavaScript and widget views carry random ids; stderr carries warnings and progress
bars. Images are skipped by nbval itself. Everything else must match the stored outputs
after the substitutions in sanitize.cfg.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CADLAB_LM", "SmolLM2-135M-Instruct")


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript", "stderr",
                                   "application/vnd.jupyter.widget-state+json")
