"""One settings object for the whole service, read from ``ANNOTUNE_*`` environment variables."""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "change-me-development-only"
MIN_SECRET_BYTES = 32
SECRET_HINT = "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"


class WeakSecretWarning(UserWarning):
    """The secret key is the default or too short (allowed outside production only)."""


def secret_key_problem(value: str) -> str | None:
    if not value or value == DEFAULT_SECRET:
        return "is not set (the built-in development key is in use)"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    return None



class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANNOTUNE_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: SQLite in data_dir
    broker_url: str = ""  # empty: kombu filesystem transport in data_dir
    result_backend: str = ""
    redis_url: str = ""  # used for cross-worker limiters; optional in the embedded default
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET)

    host: str = "127.0.0.1"
    port: int = 8000

    max_upload_bytes: int = 200 * 1024 * 1024
    max_import_bytes: int = 2 * 1024 * 1024 * 1024
    # request bodies other than multipart uploads (JSON, forms); refused with 413 while streaming
    max_body_bytes: int = 16 * 1024 * 1024
    # one multipart document upload request (several files); each file also max_upload_bytes
    max_upload_request_bytes: int = 1024 * 1024 * 1024
    # PostgreSQL: connections each process keeps open. A request holds one from its first query
    # to its response, and uvicorn runs up to 40 sync handlers at once per process: with fewer
    # kept, the extra ones were opened and closed per request (a backend started each time)
    # a version build freezes its samples in this many processes (PostgreSQL; the first is the
    # build's own), from this many selected samples on (docs/benchmarks.md, Export)
    build_shards: int = 2
    build_shard_min: int = 50_000
    db_pool_size: int = 40
    db_max_overflow: int = 10
    # SQLite: how long a writer waits for the write lock before "database is locked"
    sqlite_busy_timeout_seconds: float = 30.0
    # review queue: how long "next" reserves a pending sample for the annotator who asked
    review_lease_seconds: int = 300

    session_cookie_name: str = "annotune_session"
    # None: Secure cookies in production, plain elsewhere (http://127.0.0.1 in development)
    session_cookie_secure: bool | None = None
    session_max_age_seconds: int = 14 * 24 * 3600

    login_rate_limit: int = Field(default=10, description="failed logins per window per email+IP")
    login_rate_limit_per_address: int = Field(
        default=50, description="failed logins per window from one client address, across all emails")
    login_rate_limit_per_email: int = Field(
        default=50, description="failed logins per window for one email, across all addresses")
    login_rate_window_seconds: int = 300

    # provider/evaluation URLs may reach these internal addresses (see service/core/egress.py):
    # e.g. ["127.0.0.1:8000", "10.0.0.0/8", "vllm"]
    egress_allow: list[str] = Field(default_factory=list)
    # Hugging Face tokenizers the API may load by name (``?tokenizer=hf:<name>``): name -> path
    hf_tokenizers: dict[str, str] = Field(default_factory=dict)

    log_json: bool = False
    log_level: str = "INFO"

    first_admin_email: str = ""
    first_admin_password: SecretStr = SecretStr("")

    # generation engine: a unit whose worker vanished is picked up again after this many seconds
    generation_lease_seconds: int = 300
    generation_batch: int = 64
    # a job whose heartbeat is older than this is resumed by the sweeper
    job_stale_seconds: int = 60
    local_model_cache: Path | None = None
    allow_hub_models: bool = False  # workers can download from a model hub  # where converted local models (GGUF -> safetensors) live

    # tasks run in the calling process (unit tests, scripts); never in production
    celery_eager: bool = False

    @model_validator(mode="after")
    def _refuse_weak_secret(self) -> Settings:
        problem = secret_key_problem(self.secret_key.get_secret_value())
        if problem and self.environment == "production":
            raise ValueError(f"ANNOTUNE_SECRET_KEY {problem}; production refuses it ({SECRET_HINT})")
        if problem:
            warnings.warn(f"ANNOTUNE_SECRET_KEY {problem}: fine for {self.environment}, refused in "
                          f"production ({SECRET_HINT})", WeakSecretWarning, stacklevel=2)
        if self.session_cookie_secure is None:
            self.session_cookie_secure = self.environment == "production"
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'annotune.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def files_dir(self) -> Path:
        return (self.data_dir / "files").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
