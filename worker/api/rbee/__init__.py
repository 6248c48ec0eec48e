"""rbee compatibility: the Gen C jobs API (`POST /v1/jobs`, `GET /v1/jobs/{id}/stream`) and `/v1/health`."""
