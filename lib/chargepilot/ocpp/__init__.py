# OCPP 2.0.1 functional blocks (B, E, F, G, J, K) and the device model.
# Imports ocppj, net, output, smart, store, base.
