"""The web service: the FastAPI app, what its routes share (`state`), the routes of each
surface (`rest`, `chat`, `hooks`) and the body limit (`limits`)."""
