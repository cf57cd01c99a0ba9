"""Settings, read once from the environment (the only place that reads os.environ)."""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Kodiak's configuration; every field has an embedded default under `home`."""

    model_config = SettingsConfigDict(env_prefix="KODIAK_", extra="ignore")

    home: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 1  # uvicorn processes of `kodiak web` (each has its own model cache)
    # Proxies whose X-Forwarded-For/-Proto `kodiak web` believes (comma-separated addresses
    # or networks, "*" for any): the TLS-terminating proxy in front of it.
    forwarded_allow_ips: str = "127.0.0.1"
    admin_email: str = "admin@example.com"
    admin_password: str | None = None
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "KODIAK_DATABASE_URL")
    )
    broker_url: str | None = Field(
        default=None, validation_alias=AliasChoices("BROKER_URL", "KODIAK_BROKER_URL")
    )
    storage_url: str | None = Field(
        default=None, validation_alias=AliasChoices("STORAGE_URL", "KODIAK_STORAGE_URL")
    )
    # S3-compatible storage (STORAGE_URL=s3://bucket/prefix): the endpoint of a store other
    # than AWS (MinIO: http://minio:9000), and credentials (unset: boto3's own chain).
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "KODIAK_S3_ACCESS_KEY_ID"),
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "KODIAK_S3_SECRET_ACCESS_KEY"),
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "KODIAK_REDIS_URL")
    )
    cookie_secure: bool = False
    session_days: int = 14
    max_body_kb: int = 1024  # request bodies of every route not marked for uploads below
    max_upload_mb: int = 200  # bodies of the upload and dataset-import routes
    max_predict_mb: int = 32  # bodies of the predict routes
    max_zip_members: int = 20_000  # files one upload or import may hold, zip members included
    max_zip_total_mb: int = 1_000  # bytes one upload or import may expand to, all files and zips
    max_zip_ratio: int = 100  # a zip member above 1 MB may expand to this many times its size
    max_image_mb: int = 50  # the largest single image file (an uploaded file, a zip member)
    max_image_pixels: int = 60_000_000  # per image, from its header, before decoding
    upload_pixels_per_request: int = 2_000_000_000  # decoded, all images of one upload
    predict_pixels_per_request: int = 25_000_000  # decoded (JPEGs at draft scale), per request
    predict_decode_threads: int = 2  # images of predictions decoded at once
    allow_loopback_downloads: bool = False
    download_max_mb: int = 20
    download_connect_timeout_s: float = 5
    download_read_timeout_s: float = 10
    download_total_timeout_s: float = 30
    download_concurrency: int = 32
    download_per_host: int = 4
    search_provider: str = "duckduckgo"
    search_max_images: int = 150
    search_retries: int = 5
    search_backoff_s: float = 10
    max_active_searches: int = 3  # per user: searches and URL imports queued or running
    max_active_trainings: int = 2  # per user: trainings and lr_find sweeps queued or running
    max_event_streams: int = 8  # per user and web process: open job event streams
    worker_threads: int | None = None
    worker_gpu: str | None = None  # pin a train worker to one GPU (index or UUID)
    inference_threads: int | None = None
    model_cache_size: int = 8
    model_cache_mb: int = 1024
    batch_max_size: int = 8
    predict_rate_per_s_ip: float = 10.0
    predict_burst_ip: int = 30
    predict_rate_per_s_key: float = 100.0
    predict_burst_key: int = 200
    sign_in_failures_per_account: int = 10  # per sign_in_window_s, then 429 for that account
    sign_in_failures_per_ip: int = 50  # per sign_in_window_s, then 429 for that client
    sign_in_window_s: float = 900
    sign_in_hashes_at_once: int = 4  # password hashes computed at once (argon2: 64 MB each)
    prediction_log_flush_s: float = 1.0
    job_stale_seconds: int = 600
    job_requeue_seconds: int = 1800
    job_max_deliveries: int = 3
    job_sweep_seconds: float = 60
    demo_examples: int = 3
    log_format: str = "text"  # or "json": one object per line, with request and job ids
    log_level: str = "info"
    metrics_token: SecretStr | None = None  # /metrics is off until this is set

    def resolved_database_url(self) -> str:
        """The database URL, or the SQLite file under home."""
        return self.database_url or f"sqlite:///{(self.home / 'kodiak.db').resolve()}"

    def resolved_broker_url(self) -> str:
        """The broker URL, or Celery's filesystem transport under home."""
        return self.broker_url or "filesystem://"

    def broker_folder(self) -> Path:
        """Where the filesystem transport keeps its messages."""
        return (self.home / "broker").resolve()

    def resolved_redis_url(self) -> str | None:
        """Where shared state lives (rate limits): REDIS_URL, else a Redis broker, else none."""
        if self.redis_url:
            return self.redis_url
        broker = self.resolved_broker_url()
        return broker if broker.startswith(("redis://", "rediss://")) else None

    def resolved_storage_url(self) -> str:
        """The storage URL, or a local folder under home."""
        return self.storage_url or f"file://{(self.home / 'storage').resolve()}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
