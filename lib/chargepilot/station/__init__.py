# One charging station assembled: the connection manager (agent) and the wiring (app).
# Imports every layer below.
