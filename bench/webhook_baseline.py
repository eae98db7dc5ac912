"""The webhook benchmark's ceiling: the same uvicorn + Starlette stack, reading the body and
answering 200, with no verification and no database. python -m bench.webhook_baseline PORT"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    await request.body()
    return JSONResponse({"status": "recorded"})


app = Starlette(routes=[Route("/webhooks/linq", receive, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
