"""The training side of M2DINO: data, the multi-task Trainer, evaluation in the challenge's metrics,
submissions, fine-tuning with PEFT, model cards and routing analysis.

    from m2dino_training import MultiTaskTrainer, evaluate_model, load_data

The `m2dino-*` commands are thin argument parsers over these functions (see `cli.py`). Names are imported
from their module on first use (see `_lazy.py`), so importing one submodule does not import them all;
the submodules `train`, `evaluate`, `predict` and `score` keep their names (they are not functions here).
"""

from ._lazy import lazy_exports

_EXPORTS = {
    # data (also in `m2dino_training.data`)
    "load_data": ".data.hf_folder",
    "load_fmc_uia": ".data.fmc_uia",
    "load_sources": ".data.sources",
    "SyntheticUltrasoundSuite": ".data.synthetic",
    # training
    "M2DinoTrainingArguments": ".training_args",
    "MultiTaskTrainer": ".trainer",
    "train_models": ".train",
    "TaskSubset": ".data.sources",
    "check_resume_tasks": ".trainer",
    # evaluation, submissions and scoring
    "evaluate_folder": ".evaluate",
    "evaluate_model": ".evaluate",
    "evaluate_task": ".evaluate",
    "results_table": ".evaluate",
    "ChallengeModel": ".predict",
    "predict_folder": ".predict",
    "write_submission": ".predict",
    "score_submission": ".score",
    "load_challenge_metric": ".metrics",
    "task_metrics": ".metrics",
    # plain transformers Trainer tools
    "ChallengeMetrics": ".hf_trainer",
    "TrainerCollator": ".hf_trainer",
    # fine-tuning, adapters and new tasks
    "load_base": ".adapters",
    "load_adapters": ".adapters",
    "set_adapter": ".adapters",
    "merge_adapter": ".adapters",
    "add_task": ".new_task",
    "read_task_file": ".new_task",
    # cards and routing
    "write_model_card": ".cards",
    "write_adapter_card": ".cards",
    "analyze_routing": ".routing",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
