"""Packet codecs shared by the appliance and the gateway.

Each module reads and writes one header with `struct`; parsing never raises on
untrusted bytes: it returns a NamedTuple of fields or an `Invalid` with a reason.
"""
