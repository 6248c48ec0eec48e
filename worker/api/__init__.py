"""The HTTP layer: app factory, thin routes, schemas, error handlers, SSE. Never imports torch."""
