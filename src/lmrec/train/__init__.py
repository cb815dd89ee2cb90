from lmrec.train.trainer import (
    EpochRecord,
    OnValidation,
    TorchTrainable,
    TrainConfig,
    Trainer,
    TrainLog,
    resolve_device,
)

__all__ = ["EpochRecord", "OnValidation", "TorchTrainable", "TrainConfig", "TrainLog", "Trainer", "resolve_device"]
