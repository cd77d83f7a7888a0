"""mlops-local: a Docker-free MLOps workbench for one laptop."""

__version__ = "0.1.0"
