"""Config model of the `kiosk_http` profile (self-service kiosks with a status agent)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from gateway.configbase import DeviceBase, PositiveSeconds, one_secret_source


class KioskConfig(DeviceBase):
    profile: Literal["kiosk_http"]
    base_url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    poll_s: PositiveSeconds = 15
    hours: Literal["always", "service"] = "always"
    token_env: str | None = None
    token_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_token_source(cls, data: Any) -> Any:
        return one_secret_source(data, "token")

    def secret_fields(self) -> dict[str, tuple[str | None, str | None]]:
        if self.token_env is None and self.token_file is None:
            return {}
        return {"token": (self.token_env, self.token_file)}
