"""All configuration in one place: environment variables (``AUTOPATCH_*``), overridable by CLI flags.

| variable                  | default                           | meaning                                  |
|---------------------------|-----------------------------------|------------------------------------------|
| AUTOPATCH_DB              | ``autopatch.db``                  | SQLite database file (WAL)               |
| AUTOPATCH_MSRC_BASE_URL   | ``https://api.msrc.microsoft.com``| MSRC API root (point at a mirror/tests)  |
| AUTOPATCH_CATALOG_DIR     | unset                             | offline folder of MSRC documents         |
| AUTOPATCH_KEV_URL         | CISA's JSON feed                  | the KEV catalog (point at a mirror/tests)|
| AUTOPATCH_KEV_FILE        | unset                             | offline KEV catalog file (the demo's)    |
| AUTOPATCH_HTTP_TIMEOUT    | ``30``                            | seconds per HTTP request                 |
| AUTOPATCH_HTTP_RETRIES    | ``4``                             | retries after a 429/5xx/network error   |
| AUTOPATCH_IMPORT_WORKERS  | ``2``                             | parser processes for folder imports      |
| AUTOPATCH_NOTIFY          | ``console``                       | run-summary notifiers (see notify/factory)|
| AUTOPATCH_FLEET           | ``simulator``                     | ``simulator`` or ``ssm``                 |
| AUTOPATCH_SIMULATOR_SERVERS | ``24``                          | size of the simulated fleet              |
| AUTOPATCH_SIMULATOR_SEED  | ``7``                             | seed of the simulated fleet              |
| AUTOPATCH_SIMULATOR_TIME_SCALE | ``600``                      | simulated seconds per real second        |
| AUTOPATCH_AWS_REGION      | unset (boto3's default)           | region of the SSM/EC2 fleet              |
| AUTOPATCH_SSM_OUTPUT_BUCKET | unset                           | S3 bucket for full command output        |
| AUTOPATCH_SSM_CLOUDWATCH_OUTPUT | ``false``                   | full command output in CloudWatch Logs   |
| AUTOPATCH_CORS_ORIGINS    | unset (CORS closed)               | browser origins the API answers, a,b,... |
| AUTOPATCH_STORE           | ``sqlite``                        | ``sqlite`` (AUTOPATCH_DB) or ``dynamodb`` |
| AUTOPATCH_CATALOG_TABLE   | ``autopatch-catalog``             | DynamoDB table of the catalog            |
| AUTOPATCH_STATE_TABLE     | ``autopatch-state``               | DynamoDB table of fleet, runs, access    |
| AUTOPATCH_STATE_MACHINE_ARN | unset (runs driven in-process)  | Step Functions fleet-run workflow        |
| AUTOPATCH_RETRY_STATE_MACHINE_ARN | unset                     | Step Functions single-KB retry workflow  |
| AUTOPATCH_CATALOG_UPDATE_FUNCTION | unset (a thread of serve) | Lambda function doing catalog update jobs |
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_STATE_MACHINE_ARN = r"^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_-]{1,80}$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOPATCH_", extra="ignore")

    db: Path = Path("autopatch.db")
    msrc_base_url: str = Field(default="https://api.msrc.microsoft.com", pattern=r"^https?://\S+$")
    catalog_dir: Path | None = None
    kev_url: str = Field(
        default="https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json",
        pattern=r"^https?://\S+$",
    )
    kev_file: Path | None = None
    http_timeout: float = Field(default=30.0, gt=0)
    http_retries: int = Field(default=4, ge=1, le=10)
    import_workers: int = Field(default=2, ge=1, le=16)
    # Notifier targets carry SMTP passwords and webhook tokens: never in a repr or a log line.
    notify: str = Field(default="console", repr=False)
    fleet: str = Field(default="simulator", pattern=r"^(simulator|ssm)$")
    simulator_servers: int = Field(default=24, ge=1, le=100_000)
    simulator_seed: int = 7
    simulator_time_scale: float = Field(default=600.0, gt=0)
    aws_region: str | None = None
    # SSM returns at most 24,000 characters of output inline; with one of these the rest is read back.
    ssm_output_bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    ssm_cloudwatch_output: bool = False
    # Browsers send credentials cross-origin only to origins listed here: closed unless configured.
    cors_origins: str = ""
    # The AWS deployment: DynamoDB instead of SQLite, and runs driven by Step Functions.
    store: str = Field(default="sqlite", pattern=r"^(sqlite|dynamodb)$")
    catalog_table: str = Field(default="autopatch-catalog", pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    state_table: str = Field(default="autopatch-state", pattern=r"^[A-Za-z0-9_.-]{3,255}$")
    state_machine_arn: str | None = Field(default=None, pattern=_STATE_MACHINE_ARN)
    retry_state_machine_arn: str | None = Field(default=None, pattern=_STATE_MACHINE_ARN)
    catalog_update_function: str | None = Field(default=None, pattern=r"^[A-Za-z0-9:_-]{1,140}$")

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: str) -> str:
        for origin in (part.strip() for part in value.split(",")):
            if origin and _ORIGIN.fullmatch(origin) is None:
                raise ValueError(f"{origin[:80]!r} is not an origin: scheme://host[:port], e.g. http://localhost:3000")
        return value

    @property
    def cors_origin_list(self) -> list[str]:
        """The configured origins, blanks dropped (an empty list keeps CORS closed)."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


# An origin is what a browser sends in ``Origin``: no path, no wildcard (``*`` would open the API to any site).
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?", re.ASCII)
