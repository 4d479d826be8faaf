"""The broker process: sockets, connections, framing, limits and the lifecycle (asyncio, uvloop)."""
