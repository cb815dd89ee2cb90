from lmrec.train.trainer import EpochRecord, TorchTrainable, TrainConfig, Trainer, TrainLog

__all__ = ["EpochRecord", "TorchTrainable", "TrainConfig", "TrainLog", "Trainer"]
