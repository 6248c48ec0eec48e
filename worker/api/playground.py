"""The playground: a static page at `/` (its files under /playground/) that drives the native API from a browser."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/playground"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The page itself; it reads /v1/capabilities and calls the API with the key the user gives it."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def install_playground(app: FastAPI) -> None:
    """Serve the page at `/` and its scripts and styles under /playground/."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="playground")
