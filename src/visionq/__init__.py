"""visionq: asynchronous image classification on FastAPI, Redis and Celery."""

__version__ = "0.1.0"
