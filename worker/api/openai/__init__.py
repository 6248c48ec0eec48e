"""The OpenAI Images API (`/v1/images/*`, `/v1/models`, `/v1/files`) on the same engine as the native API."""
