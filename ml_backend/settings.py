"""Every setting of the backend, read once from the environment (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from model.promotion import check_metric

if TYPE_CHECKING:  # torch comes with them: imported when a worker needs them, not for `--help`
    from model.finetune import FinetuneConfig
    from model.training import TrainConfig

# Strategies `seed` can choose the first tasks with (before any label).
COLD_START_METHODS = ("auto", "typiclust", "probcover", "maxherding", "uherding", "kcenter",
                      "kmeans", "random")


class Settings(BaseSettings):
    """Typed settings; each field is the upper-case environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    label_studio_url: str = Field(
        "http://localhost:8080", description="Base URL the backend uses to reach Label Studio."
    )
    label_studio_api_key: SecretStr = Field(
        SecretStr(""), description="Legacy token or personal access token of a Label Studio user."
    )
    label_studio_local_files_document_root: Path | None = Field(
        None, description="Label Studio's LOCAL_FILES_DOCUMENT_ROOT as this machine sees it: "
        "import-images serves files under it through local-files storage instead of uploading.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding the job queue.")
    model_dir: Path = Field(Path("data/models"), description="Model versions (and, unless "
                            "EMBEDDING_CACHE_DIR says otherwise, the embedding cache).")
    embedding_cache_dir: Path | None = Field(
        None, description="Where this machine caches image embeddings (SQLite files, recomputed "
        "when missing); default MODEL_DIR. With workers on several machines sharing MODEL_DIR, "
        "a folder on each machine's own disk: the cache refuses a network filesystem.")
    queue_name: str = Field("al-backend", description="RQ queue the worker listens on.")
    gpu_queue_name: str = Field(
        "", description="RQ queue for the jobs that embed images or fine-tune (retrain, "
        "prioritize, finetune), which GPU workers take; empty: every job goes to QUEUE_NAME.",
    )
    backbone: str = Field(
        "efficientnet_lite0", description="Backbone: efficientnet_lite0 (ImageNet weights "
        "installed with the package), a timm foundation model or a torchvision name (README).",
    )
    weights: str = Field(
        "DEFAULT", description="DEFAULT (the backbone's pretrained weights), a torchvision weights "
        "name (IMAGENET1K_V1, ...), a local file (.pth, .safetensors), or none.",
    )
    device: str = Field("auto", description="Torch device for embeddings: auto, cpu, cuda, ...")
    batch_size: int = Field(32, ge=1, description="Images per forward pass.")
    seed: int = Field(0, description="Seed for head training and sampling.")
    image_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated extra hosts images may be fetched from (besides Label Studio).",
    )
    image_max_bytes: int = Field(50_000_000, ge=1, description="Largest image file fetched.")
    image_timeout: float = Field(20.0, gt=0, description="Seconds allowed to fetch one image.")
    basic_auth_user: str = Field(
        "", description="HTTP basic auth user every endpoint requires (with BASIC_AUTH_PASS)."
    )
    basic_auth_pass: SecretStr = Field(SecretStr(""), description="HTTP basic auth password.")
    webhook_secret: SecretStr = Field(
        SecretStr(""), description="Shared secret /webhook accepts in the X-Webhook-Secret header."
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    retrain_lock_ttl: int = Field(
        1800, ge=10, description="Seconds after which a dead worker's retrain lock expires."
    )
    retrain_lock_wait: int = Field(
        3600, ge=1, description="Seconds a queued retrain waits for the running one to finish."
    )
    job_retries: int = Field(3, ge=0, description="Retries of a failed job (Label Studio down).")
    job_retry_delay: int = Field(
        10, ge=1, description="Seconds before the first retry; doubles for each further one."
    )
    reconcile_interval: int = Field(
        300, ge=0, description="Seconds between a worker's checks that every project's serving "
        "version has Label Studio's current labels; 0: only `python -m ml_backend reconcile`.",
    )
    annotations_full_read_every: float = Field(
        3600, ge=0, description="Seconds after which a worker reads every annotation of a "
        "project again; in between a retrain reads only the tasks changed since its last read "
        "while Label Studio's annotation counts agree with what it holds; 0: read all every time.",
    )
    task_list_max_age: float = Field(
        600, ge=0, description="Seconds a worker reuses its listing of a project's tasks between "
        "retrains (annotated tasks are always read afresh; task imports and deletions re-list "
        "at once); 0: list every task on every retrain.",
    )
    strategy: str = Field("auto", description="Sampling strategy that orders the queue.")
    queue_batch: int = Field(
        20, ge=1, description="Tasks a batch-aware strategy chooses jointly at the queue's head."
    )
    retrain_every: int = Field(
        1, ge=1, description="Retrain after this many new annotations (START_TRAINING always does)."
    )
    keep_versions: int = Field(3, ge=1, description="Prediction versions kept in Label Studio.")
    queue_head: int = Field(
        50, ge=1, description="Unlabelled tasks, first in the order, whose predictions a retrain "
        "stores in Label Studio; the rest are ranked too and predicted on demand (README: sizing).",
    )
    version_prefix: str = Field(
        "al-", pattern=r"^[A-Za-z0-9._-]{1,20}$", description="Prefix of the prediction versions "
        "this backend creates in Label Studio (al-v3, al-untrained), apart from anyone else's.",
    )
    prune_slice_seconds: float = Field(
        5, gt=0, description="Seconds a job spends at a time deleting old prediction versions "
        "(one prediction per request, so annotators are never blocked); a `prune` job goes on "
        "with the rest, behind any retrain queued meanwhile.",
    )
    backend_url: str = Field(
        "", description="URL Label Studio uses to reach this backend (finds it among ML backends)."
    )
    mc_passes: int = Field(10, ge=2, description="Stochastic passes for the bald strategy.")
    # Label configs with several questions or a multiple-choice one (sampling/questions.py).
    label_uncertainty: Literal["margin", "entropy"] = Field(
        "margin", description="Uncertainty of each label of a multiple-choice question: its "
        "binary margin or entropy.",
    )
    label_aggregate: Literal["mean", "max"] = Field(
        "mean", description="A multiple-choice question's uncertainty from its labels': their "
        "mean, or the most uncertain label's (max).",
    )
    question_weights: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict, description="How much each question counts in the priority, as "
        "name:weight pairs (species:2,count:1); questions not named weigh 1. Default: the mean.",
    )
    # Head training, evaluation and promotion (model/training.py, model/promotion.py).
    head_hidden: int = Field(0, ge=0, description="Hidden units of the MLP head; 0: linear head.")
    head_dropout: float = Field(
        0.2, ge=0, lt=1, description="Dropout of the head (also what MC-dropout passes sample)."
    )
    ensemble_size: int = Field(
        0, ge=0, description="Heads trained on bootstrap samples for stochastic predictions; "
        "0 or 1: one head, sampled with MC dropout.",
    )
    split_field: str = Field(
        "split", description="Task data field whose value val/test fixes a task's evaluation role."
    )
    holdout_fraction: float = Field(
        0.2, ge=0, lt=1, description="Labelled tasks held out for validation when none is "
        "marked val.",
    )
    annotators: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated user ids or emails: train only on their annotations.",
    )
    ground_truth_only: bool = Field(
        False, description="Train only on annotations marked as ground truth."
    )
    promotion_metric: str = Field(
        "macro_f1", description="accuracy, macro_f1, micro_f1 or subset_accuracy, each the mean "
        "over the label config's questions or one question's (macro_f1:species); "
        "precision:<class> or recall:<class>."
    )
    promotion_tolerance: float = Field(
        0.02, ge=0, description="How much worse than the serving version a new one may be."
    )
    promotion_min_heldout: int = Field(
        20, ge=0, description="Fewer shared held-out tasks than this: promote without comparing."
    )
    finetune_every: int = Field(
        0, ge=0, description="Fine-tune the backbone every this many new labels (a background "
        "job); 0: only `python -m ml_backend finetune`.",
    )
    finetune_epochs: int = Field(3, ge=1, description="Epochs of a backbone fine-tune.")
    finetune_loss: Literal["ce", "triplet"] = Field(
        "ce", description="Fine-tuning loss: ce (cross-entropy) or triplet (batch-hard)."
    )
    finetune_sampler: Literal["pk", "plain"] = Field(
        "pk", description="Fine-tuning batches: pk (P classes x K images) or plain (shuffled)."
    )
    log_level: str = Field(
        "INFO", description="Python logging level (DEBUG adds every HTTP request to Label Studio)."
    )

    @field_validator("image_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("annotators", mode="before")
    @classmethod
    def _split_annotators(cls, value: object) -> object:
        if isinstance(value, str):
            return [a.strip().lower() for a in value.split(",") if a.strip()]
        return value

    @field_validator("question_weights", mode="before")
    @classmethod
    def _split_weights(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        out = {}
        for pair in filter(None, (p.strip() for p in value.split(","))):
            name, sep, weight = pair.rpartition(":")
            try:
                out[name.strip()] = float(weight)
            except ValueError:
                sep = ""
            if not sep or not name.strip() or out[name.strip()] < 0:
                raise ValueError(f"QUESTION_WEIGHTS wants name:weight pairs with weights >= 0, "
                                 f"got {pair!r}")
        return out

    @field_validator("promotion_metric")
    @classmethod
    def _check_metric(cls, value: str) -> str:
        return check_metric(value)

    def train_config(self) -> TrainConfig:
        """The settings that shape a training run, as the model package takes them."""
        from model.training import TrainConfig

        return TrainConfig(
            seed=self.seed, hidden=self.head_hidden, dropout=self.head_dropout,
            ensemble=self.ensemble_size, holdout=self.holdout_fraction,
            metric=self.promotion_metric, tolerance=self.promotion_tolerance,
            min_heldout=self.promotion_min_heldout,
        )

    def finetune_config(self) -> FinetuneConfig:
        from model.finetune import FinetuneConfig

        return FinetuneConfig(epochs=self.finetune_epochs, loss=self.finetune_loss,
                              sampler=self.finetune_sampler, seed=self.seed)

    @model_validator(mode="after")
    def _check_basic_auth(self) -> Settings:
        password = self.basic_auth_pass.get_secret_value()
        if bool(self.basic_auth_user) != bool(password):
            raise ValueError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together")
        # Clients encode basic auth differently beyond ASCII (Label Studio: latin-1, FastAPI
        # decodes ASCII), and a colon ends the user name.
        if not (self.basic_auth_user + password).isascii() or ":" in self.basic_auth_user:
            raise ValueError("BASIC_AUTH_USER and BASIC_AUTH_PASS must be ASCII, the user "
                             "without ':'")
        return self

    @field_validator("label_studio_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"LABEL_STUDIO_URL must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` instead."""
    return Settings()
