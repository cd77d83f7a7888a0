"""`mlops-local serve model`: a registered model over HTTP (MLflow's protocol), hot-reloaded, with metrics."""
