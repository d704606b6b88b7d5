"""Settings from command-line options and `MEDBRIDGE_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDBRIDGE_", extra="ignore")

    data_dir: Path = Field(
        Path("medbridge-data"), description="where the embedded store and objects live"
    )
    host: str = Field("127.0.0.1", description="address every listener binds")
    http_port: int = Field(8080, ge=0, le=65535)
    mllp_port: int = Field(2575, ge=0, le=65535)
    dicom_port: int = Field(11112, ge=0, le=65535)
    mongodb_uri: str | None = Field(None, description="external MongoDB; embedded store when unset")
    database: str = Field("medbridge", description="MongoDB database name")
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="largest accepted HTTP body")
    public_base_url: str | None = Field(None, description="base URL clients see, if behind a proxy")
    log_level: str = Field("info")
    serialize_writes: bool = Field(
        True,
        description="serialize MongoDB writes in this process; needed by the embedded store, "
        "whose transactions are not isolated; false for a real MongoDB replica set",
    )

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def mongo_dir(self) -> Path:
        return self.data_dir / "mongo"
