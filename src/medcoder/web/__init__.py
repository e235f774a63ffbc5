"""The review workbench: a FastAPI app factory, Jinja2 templates and static files. It calls
:mod:`medcoder.review` and never reaches into the database by itself."""

from medcoder.web.app import KEYS, WebSettings, create_app

__all__ = ["KEYS", "WebSettings", "create_app"]
