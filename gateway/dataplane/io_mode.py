"""Switch a running gateway's userspace IO mode (config `userspace_io`) and wait for it.

For benchmarks and operators: the config file is rewritten atomically, the gateway sees
the new mtime, reconciles (offloads on or off on every tenant port) and restarts the
changed workers; `set_userspace_io` returns when every tenant's status reports the mode.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from cjb.gateway.dataplane.config import (
    FastPathMode,
    UserspaceIO,
    load,
    read_model,
    write_model,
)


class ModeSwitchTimeout(RuntimeError):
    """The gateway did not report the new mode in time (is `cjb gateway run` running?)."""


def set_userspace_io(config_path: Path, mode: UserspaceIO, timeout: float = 20.0) -> None:
    model = read_model(config_path)
    tenants = {
        name: t.model_copy(update={"userspace_io": None}) for name, t in model.tenants.items()
    }
    write_model(config_path, model.model_copy(update={"userspace_io": mode, "tenants": tenants}))
    status_file = load(config_path).status_file
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _all_running_in(status_file, mode, set(tenants)):
            return
        time.sleep(0.2)
    raise ModeSwitchTimeout(
        f"{status_file}: tenants not all running with userspace_io={mode!r} after {timeout:.0f}s;"
        " check the gateway log"
    )


def _all_running_in(status_file: Path, mode: str, names: set[str]) -> bool:
    try:
        status = json.loads(status_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    tenants = status.get("tenants", {})
    return all(
        tenants.get(n, {}).get("state") == "running"
        and tenants.get(n, {}).get("userspace_io") == mode
        for n in names
    )


def set_fast_path(config_path: Path, mode: FastPathMode, timeout: float = 20.0) -> None:
    """Switch every tenant to `fast_path` `mode` (kernel: where it loads) and wait until the
    running gateway's status shows each tenant running in it."""
    model = read_model(config_path)
    tenants = {name: t.model_copy(update={"fast_path": None}) for name, t in model.tenants.items()}
    write_model(config_path, model.model_copy(update={"fast_path": mode, "tenants": tenants}))
    status_file = load(config_path).status_file
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads(status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        # Registry tenants are not in the file: wait for every tenant the status lists.
        states = status.get("tenants", {})
        names = set(tenants) or set(states)
        if names and all(
            states.get(n, {}).get("state") == "running"
            and (states.get(n, {}).get("fast_path") or {}).get("mode") == mode
            for n in names
        ):
            return
        time.sleep(0.2)
    raise ModeSwitchTimeout(
        f"{status_file}: tenants not all running with fast_path={mode!r} after {timeout:.0f}s;"
        " check the gateway log"
    )
