"""The same tiny app as drover's demo (`/pid` answers the worker's pid), for
the gunicorn and uvicorn baselines of scripts/bench-fleet.py."""
import os


def wsgi(environ, start_response):
    start_response("200 OK", [("content-type", "text/plain")])
    return [str(os.getpid()).encode()]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
