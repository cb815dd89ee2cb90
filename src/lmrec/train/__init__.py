from lmrec.train.trainer import (
    EpochRecord,
    OnValidation,
    Trainable,
    TrainConfig,
    Trainer,
    TrainLog,
    resolve_device,
)

__all__ = ["EpochRecord", "OnValidation", "Trainable", "TrainConfig", "TrainLog", "Trainer", "resolve_device"]
