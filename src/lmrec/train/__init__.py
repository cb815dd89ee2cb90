from lmrec.train.trainer import EpochRecord, TorchTrainable, TrainConfig, Trainer, TrainLog, resolve_device

__all__ = ["EpochRecord", "TorchTrainable", "TrainConfig", "TrainLog", "Trainer", "resolve_device"]
