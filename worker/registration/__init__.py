"""The hive protocol: ready callback, heartbeats, re-registration, the stopping heartbeat."""
