"""The web process's prediction runtime: loaded models, micro-batches, the prediction log.

`Serving` (runtime.py) owns them; the app's lifespan creates, starts and stops it, and
`app.services.predictions` holds the plain functions that predict over it.
"""
