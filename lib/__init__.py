"""Backbeat: open, serverless data infrastructure for Google Cloud.

The folder ``lib/`` is the import package ``backbeat``. Sub-packages keep their heavy imports
(Google clients, numpy, pyspark) inside functions so that a Cloud Function's cold start only pays
for what it uses.
"""

__version__ = "0.1.0"
