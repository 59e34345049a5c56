"""`edge-moss serve`: an OpenAI-compatible HTTP API, a live WebSocket stream and Wyoming.

A thin layer over `EdgeMoss` and the live session: requests become jobs on one worker thread
(queue.py), so one model serves every connection without two runs touching one KV cache.
Needs the `[server]` extra (Starlette, uvicorn, python-multipart, wyoming); the runtime core
never imports this package.
"""
