"""The native API (`/execute`, `/img2img`, `/inpaint`, `/encode`, `/v1/jobs`, …): bodies, routes, serializer."""
