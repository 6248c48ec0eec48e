"""Jobs, the bounded queue, the device executor thread, progress events and cancellation (no fastapi)."""
