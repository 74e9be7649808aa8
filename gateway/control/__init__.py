"""The gateway control plane: enrollment and operator API, registry, CA.

settings.py    gateway.toml (commented defaults), pydantic-validated
statedir.py    state directory layout; `init` creates CA, TLS cert, WireGuard keys, token
pki.py         keys and certificates (cryptography), pure functions
migrations.py  registry schema as ordered migrations
registry.py    SQLite registry (WAL): inventory, tenants, allocations, certs, audit;
               its docstring is the API the data plane's reconciler uses
nonces.py      one-time, bounded nonce store (sans-IO)
ratelimit.py   per-IP token buckets (sans-IO)
enroll.py      enrollment checks and certificate issue (sans-IO)
metrics.py     Prometheus exposition, with a hook for data-plane collectors
api.py         aiohttp routes; ControlError -> ErrorBody in one middleware
server.py      TLS context and the serving process (`cjb gateway serve`)
"""
