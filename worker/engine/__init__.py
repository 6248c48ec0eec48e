"""The engine: the torch-free contract (`protocol.py`), request resolution, typed events, jobs, the bounded queue,
batching, the device executor thread and cancellation. Never imports fastapi or torch."""
