"""One small backend class per device behind the `ImageGenerationBackend` protocol, and the resolver."""
