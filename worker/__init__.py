"""sd-worker: an image-generation worker daemon for Stable Diffusion families."""

__version__ = "0.1.0"
