import pytest

from ml_backend import jobs
from ml_backend.runtime import Runtime
from ml_backend.settings import Settings, get_settings
from tests.unit.fakes import FakeLabelStudio


@pytest.fixture
def settings(tmp_path, redis_url) -> Settings:
    return Settings(
        model_dir=tmp_path / "models", backbone="mobilenet_v3_small", weights="none",
        redis_url=redis_url, label_studio_url="http://ls.test:8080", batch_size=8,
    )


@pytest.fixture
def fake_ls() -> FakeLabelStudio:
    return FakeLabelStudio()


@pytest.fixture
def runtime(settings, fake_ls) -> Runtime:
    return Runtime(settings, labelstudio=fake_ls)


@pytest.fixture
def worker_runtime(runtime) -> Runtime:
    """The test's runtime is also the one RQ jobs of this process (and its forks) use."""
    jobs.use_runtime(runtime)
    yield runtime
    jobs.use_runtime(None)


@pytest.fixture
def cli_env(settings, monkeypatch):
    """The test settings as the environment a CLI command in this process reads."""
    for key, value in {"MODEL_DIR": str(settings.model_dir), "BACKBONE": settings.backbone,
                       "WEIGHTS": settings.weights, "REDIS_URL": settings.redis_url}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
