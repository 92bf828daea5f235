"""The shapes of the HTTP API (API.md): its vocabulary (statuses, stages, priorities, roles) and the bodies it
takes and gives. Pydantic and the standard library only: the server builds them, the SDK and the CLI's client
commands read them, and neither side imports the other."""
