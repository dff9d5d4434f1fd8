"""The fine-tune step: the project's backbone adapted to its labels, then a version trained on it
(promoted by the usual rule, judged against the serving version on its own embeddings)."""

from __future__ import annotations

from collections.abc import Sequence

from ml_backend.runtime import Runtime
from ml_backend.steps import StepContext, read_pool, retrain, timed
from model.backbone import Backbone, save_weights
from model.finetune import FinetuneConfig
from model.finetune import finetune as finetune_weights
from model.images import decode_image
from model.training import TRAIN, assign_roles


class _TaskImages(Sequence):
    """Images of tasks, fetched and decoded when the fine-tuning loop asks for them."""

    def __init__(self, rt: Runtime, urls: list[str], target: int):
        self.rt, self.urls, self.target = rt, urls, target

    def __len__(self) -> int:
        return len(self.urls)

    def __getitem__(self, i):
        return decode_image(self.rt.labelstudio.fetch_image(self.urls[i]), target=self.target)


def finetune_backbone(rt: Runtime, project: int, config: FinetuneConfig,
                      progress: bool | None = None, ctx: StepContext = StepContext()) -> Backbone:
    """Fine-tune the project's backbone on its training tasks (never the held-out ones, which
    judge the result) and return the new backbone, saved under MODEL_DIR/backbones/."""
    s = rt.settings
    label_config, pool = read_pool(rt, project, ctx)
    ctx.note(f"fine-tuning the backbone on {len(pool.labels)} labels")
    with timed(project, "fine-tune backbone") as noted:
        bb = rt.backbone_for(project)
        known = rt.store(project, bb).task_vectors({t: pool.urls[t] for t in pool.labels})
        tasks = [t for t in pool.labels if t in known]  # images that loaded before
        roles = assign_roles(tasks, [pool.data[t].get(s.split_field) for t in tasks],
                             fraction=s.holdout_fraction, seed=s.seed)
        train = [t for t, r in zip(tasks, roles) if r == TRAIN]
        question = next((q for q in label_config.questions if not q.multiple), None)
        if question is None:
            raise ValueError(f"project {project}: fine-tuning learns a single-choice question, "
                             "and the label config has none")
        # The config's first single-choice question teaches the backbone.
        train = [t for t in train if question.name in pool.labels[t]]
        labels = [question.classes.index(pool.labels[t][question.name][0]) for t in train]
        if len(train) < 2:
            raise ValueError(f"project {project}: too few labelled tasks to fine-tune on "
                             "(retrain first, so their images are known to load)")
        images = _TaskImages(rt, [pool.urls[t] for t in train], bb.resize_size)
        state = finetune_weights(bb, images, labels, config, progress=progress)
        path = save_weights(s.model_dir / "backbones", bb.name, state)
        noted |= {"images": len(train), "epochs": config.epochs}
    return rt.load_backbone(bb.name, str(path.relative_to(s.model_dir)))


def finetune(rt: Runtime, project: int, ctx: StepContext = StepContext(),
             config: FinetuneConfig | None = None,
             progress: bool | None = None) -> tuple[Backbone, dict]:
    """Fine-tune the backbone (FINETUNE_* settings unless `config`), then retrain on it; the
    new backbone and the retrain's result."""
    tuned = finetune_backbone(rt, project, config or rt.settings.finetune_config(), progress,
                              ctx)
    with rt.candidate_backbone(project, tuned):
        return tuned, retrain(rt, project, ctx)
