"""The service side: tenancy for applications on the service host.

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
- `tenant_address` — tenant-unique client addresses (fd<tenant /64>::<IPv4>) and their reverse.
- `framework` — write a tenant-aware TCP/UDP service in a few lines (asyncio or blocking);
  `datagram` — its UDP socket that answers from the address asked (IPV6_PKTINFO).
- `site`, `http_server`, `front` — the reference multi-tenant HTTP server and PROXY v2 front.
- `server_configs` — nginx/Apache/HAProxy snippets for use behind the front.
- `dns_whoami` — the multi-tenant DNS responder (the framework's UDP example).

Guide: docs/applications.md.
"""
