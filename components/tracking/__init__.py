"""MLflow helpers: tracking location, run tags, model logging and the registry."""
