"""``GET /dashboard``: the live ops page (static HTML, CSS and JS; its data comes from /v1/stats)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, send_from_directory

bp = Blueprint("dashboard", __name__, static_folder="static", static_url_path="/dashboard/static")


@bp.get("/dashboard")
def dashboard() -> Any:
    """Serve the dashboard page; it asks for an API key itself when the API needs one."""
    response = send_from_directory(bp.static_folder or "static", "dashboard.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response
