"""The service side: tenancy for applications on the service host (DESIGN.md §2).

Every tenant's LAN reaches the service host on its own link; a peer's `sin6_scope_id`
names that link, and the tenant directory published by the gateway names its tenant.

Modules, one job each:

- `directory` — the tenant directory file: schema (pydantic, at the edge) and frozen values.
- `watch` — notices changes to that file (mtime poll, time passed in; no thread inside).
- `resolve` — peer sockaddr -> interface name -> tenant; never raises.
- `tenancy` — the facade an application holds: directory + watcher + resolver + clock.
- `aio` — asyncio helpers: tenant of a StreamWriter/transport, listening sockets, watch task,
  the connection cap and serve loop shared by `http_server` and `front`.
- `proxy_v2` — PROXY protocol v2 codec (sans-IO) with CJB's tenant TLVs.
- `site`, `http_server`, `front` — the reference multi-tenant HTTP server and PROXY v2 front.
"""
