"""Queue-controller test data shared by the unit and end-to-end tests."""

from __future__ import annotations

from typing import Any

# another vendor's register map, as an integrator writes it: no version or count registers, a
# wider window record, services elsewhere (config.md, register_map)
VENDOR_MAP: dict[str, Any] = {
    "version": None,
    "header": {
        "version": None,
        "windows": None,
        "waiting_total": None,
        "issued_today": 10,
        "change_counter": 11,
        "services": None,
    },
    "windows": {
        "base": 200,
        "stride": 8,
        "count": 6,
        "max_count": 20,
        "fields": {"prefix": None, "served_today": 2, "staff": 3, "call_count": 4, "service": 5},
    },
    "services": {
        "base": 400,
        "stride": 2,
        "count": 3,
        "max_count": 10,
        "fields": {"longest_wait_s": None, "last_issued": 1, "prefix": None},
    },
    "status_codes": {1: "closed", 2: "idle", 3: "serving", 4: "paused"},
    "max_read": 32,
}
