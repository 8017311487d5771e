"""Data readers, the synthetic suite and the multi-task batching of M2DINO.

    from m2dino_training.data import load_data, load_fmc_uia, SyntheticUltrasoundSuite

Names are imported from their module on first use (see `_lazy.py`).
"""

from .._lazy import lazy_exports

_EXPORTS = {
    # readers, and the one error class they raise (the kind of each reader is a subclass)
    "DataError": ".checks",
    "load_data": ".hf_folder",
    "load_hf_folder": ".hf_folder",
    "HFFolderDataError": ".hf_folder",
    "load_fmc_uia": ".fmc_uia",
    "FMCUIADataError": ".fmc_uia",
    "load_report": ".fmc_uia",
    "format_load_report": ".fmc_uia",
    "stored_column": ".fmc_uia",
    "read_dicom": ".dicom",
    # a run's training and held-out sources, and views of some of their tasks
    "load_sources": ".sources",
    "TaskSubset": ".sources",
    # the synthetic suite
    "SyntheticUltrasoundSuite": ".synthetic",
    "SyntheticDataset": ".synthetic",
    "write_challenge_layout": ".synthetic",
    "save_grid": ".synthetic",
    # from examples to batches
    "Augmenter": ".augment",
    "AugmentConfig": ".augment",
    "ProcessedExamples": ".collate",
    "TaskBatchSampler": ".samplers",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
