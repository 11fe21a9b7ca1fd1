"""nbval settings for the lesson notebooks: compare text outputs strictly, skip what is not reproducible.

Loaded by `make notebooks` as a plugin (``-p tests.notebooks.conftest``), so the notebooks folder
holds only lessons. HTML, JavaScript and widget views carry random ids; stderr carries warnings
and progress bars. Images are skipped by nbval itself. Everything else must match the stored
outputs after the substitutions in tests/notebooks/sanitize.cfg. The offline environment comes
from the Makefile's ``OFFLINE`` line, the one place it is set.
"""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "application/javascript", "stderr",
                                   "application/vnd.jupyter.widget-state+json")
