"""Celery workers: batch scoring and retraining. Imports ``shared`` only, never the API."""
