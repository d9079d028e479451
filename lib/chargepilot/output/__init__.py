# Control loop and control pilot: composite limit -> pilot duty / relay.
# Imports smart and base.
