"""The HTTP layer: app factory, error bodies, SSE framing, and one adapter per protocol (`native/`, `openai/`,
`a1111/`, `rbee/`), each a `to_params()`, thin routes and a serializer over the same engine. Never imports torch."""
