"""The worker as a Ray Serve deployment (`sd-worker ray`, `serve deploy deploy/ray-serve.yaml`).

Needs the optional extra `sd-worker[ray]`; nothing outside this package imports it, so the plain worker never
loads Ray. `options` and `affinity` are Ray-free (the CLI and tests read them without Ray installed).
"""
