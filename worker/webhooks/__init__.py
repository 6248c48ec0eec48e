"""Webhooks: which URLs may be called (`policy`), and signed delivery with retries (`sender`)."""
