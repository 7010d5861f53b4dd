"""The web service: the FastAPI app and how it is served (`app`), what its routes share
(`state`), the routes of each surface (`rest` with its event stream, `chat`, `hooks` with
their configuration in `hooks_config`) and the body limit (`limits`). The only layer of
`workers.api` that imports FastAPI, Starlette or uvicorn."""
