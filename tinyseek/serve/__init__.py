"""`tinyseek serve`: a DeepSeek-API-compatible HTTP server for a tinyseek checkpoint.

- `app.py`: the FastAPI app: a `Service` (the state and the steps of a request) whose handlers `create_app` wires
  to routes.
- `cli.py`: the `tinyseek serve` command, and `serve_in_thread` for tests.
- `protocol.py`: the request schema and OpenAI-shaped errors (which status for what).
- `scheduler.py`: the background thread that drives the engine's continuous batching.
- `prefix_cache.py`: context caching over token blocks of MLA latent rows, LRU under a byte budget.
- `reasoning.py`: splitting a completion into `reasoning_content` and `content` while streaming.
- `ledger.py`: the SQLite usage ledger and `tinyseek usage`.
- `static/index.html`: the chat page served at `/`.
"""
