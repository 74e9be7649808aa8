"""The control protocol between appliance and gateway: wire models and signing rules.

One place for both sides (like Tailscale's tailcfg): a change here is a protocol change,
and PROTOCOL_VERSION says so.
"""
