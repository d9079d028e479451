# Network: RFC 6455 WebSocket client (frames, handshake, I/O), TLS, reconnect back-off.
# Imports base only.
