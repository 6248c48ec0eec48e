"""The AUTOMATIC1111 web UI API (`/sdapi/v1/*`) on the same engine, for SillyTavern, Open WebUI, LibreChat and
webuiapi."""
