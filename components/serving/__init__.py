"""Serving: one MLflow pyfunc per method that answers for any user of any served task."""
